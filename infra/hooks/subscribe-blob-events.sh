#!/bin/sh
# azd postdeploy hook: subscribe segment_dropped to the segments container's BlobCreated events
# (infra/blob-events.bicep). Needs the Azure CLI signed in to the same subscription as azd.
set -eu
az deployment group create \
  --name blob-events \
  --resource-group "$AZURE_RESOURCE_GROUP" \
  --template-file infra/blob-events.bicep \
  --parameters functionAppName="$AZURE_FUNCTION_APP_NAME" \
               systemTopicName="$EVENT_GRID_SYSTEM_TOPIC_NAME" \
               segmentsContainer="$SEGMENTS_CONTAINER" \
  --output none
echo "segment_dropped subscribed to BlobCreated events of container $SEGMENTS_CONTAINER"
