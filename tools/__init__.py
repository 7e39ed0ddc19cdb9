"""Developer tools for klaviyo-segment-export (not deployed)."""
