"""klaviyo-segment-export: stream customer segments from blob storage into Klaviyo lists."""
