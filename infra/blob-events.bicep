// Subscribes the segment_dropped function to BlobCreated events of the segments container. Run after the
// code is deployed (azure.yaml's postdeploy hook: infra/hooks/subscribe-blob-events.sh or .ps1): the host
// creates the blobs_extension key when it first starts with an Event Grid blob trigger, and Event Grid
// validates the webhook when the subscription is created. The hook wakes the app, waits for that key and
// passes it in: a listKeys() here would fail the whole deployment when the host has not started yet.
// Endpoint and key: https://learn.microsoft.com/azure/azure-functions/functions-event-grid-blob-trigger
targetScope = 'resourceGroup'

param functionAppName string
param systemTopicName string
param segmentsContainer string = 'segments'

@description('The blob-triggered function (function_app.py).')
param functionName string = 'segment_dropped'

@secure()
@description('The host\'s blobs_extension system key (az functionapp keys list ... systemKeys.blobs_extension); the hook reads it once the host has started.')
param blobsExtensionKey string

resource site 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

resource systemTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' existing = {
  name: systemTopicName
}

resource segmentDropped 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: systemTopic
  name: 'segment-dropped'
  properties: {
    destination: {
      endpointType: 'WebHook'
      properties: {
        endpointUrl: 'https://${site.properties.defaultHostName}/runtime/webhooks/blobs?functionName=Host.Functions.${functionName}&code=${blobsExtensionKey}'
        maxEventsPerBatch: 1
      }
    }
    filter: {
      includedEventTypes: [
        'Microsoft.Storage.BlobCreated'
      ]
      subjectBeginsWith: '/blobServices/default/containers/${segmentsContainer}/'
    }
    eventDeliverySchema: 'EventGridSchema'
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
  }
}
