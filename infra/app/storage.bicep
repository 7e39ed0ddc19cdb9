// The storage account: the Functions host's own storage, the segments and reports containers, the run
// queues and the app's tables. Shared keys are off: every caller signs in with Entra ID.
param name string
param location string
param tags object
param segmentsContainer string
param reportsContainer string
param systemTopicName string

@description('Replication of the account.')
param sku string

// The names shared/settings.py (RUNS_QUEUE) and shared/store.py use; tests/test_infra.py compares them.
var queues = [
  'export-runs'
  'export-runs-poison'
]
var tables = [
  'connections'
  'exports'
  'runs'
  'triggerseen'
]
var deploymentContainer = 'app-package'

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35:no VNet in this template, so the Flex app, Event Grid and the people dropping segments reach the account over its public endpoint; shared keys are off, so every request needs an Entra token with a data role
  // checkov:skip=CKV_AZURE_59:no VNet in this template, so the Flex app, Event Grid and the people dropping segments reach the account over its public endpoint; shared keys are off, so every request needs an Entra token with a data role
  // checkov:skip=CKV_AZURE_206:geo-replication doubles the cost for data that is not the original: segments are copies of the lake's or CDP's files, and a lost report or run can be repeated (storageSku picks GRS or GZRS where wanted)
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: sku
  }
  properties: {
    accessTier: 'Hot'
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
    encryption: {
      requireInfrastructureEncryption: true
      keySource: 'Microsoft.Storage'
      services: {
        blob: {
          enabled: true
        }
        file: {
          enabled: true
        }
        queue: {
          enabled: true
          keyType: 'Account'
        }
        table: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource containers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [
  for container in [segmentsContainer, reportsContainer, deploymentContainer]: {
    parent: blobService
    name: container
    properties: {
      publicAccess: 'None'
    }
  }
]

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource runQueues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [
  for queue in queues: {
    parent: queueService
    name: queue
  }
]

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource appTables 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = [
  for table in tables: {
    parent: tableService
    name: table
  }
]

// Blob events of this account; infra/blob-events.bicep subscribes the segment_dropped function to them.
resource systemTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: systemTopicName
  location: location
  tags: tags
  properties: {
    source: account.id
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

output name string = account.name
output blobEndpoint string = account.properties.primaryEndpoints.blob
output queueEndpoint string = account.properties.primaryEndpoints.queue
output deploymentContainer string = deploymentContainer
output systemTopicName string = systemTopic.name
