// The Flex Consumption Function App (Python 3.11) running as the user-assigned identity, and its app
// settings: identity-based storage connections, no keys or connection strings with secrets.
param name string
param planName string
param location string
param tags object
param identityId string
param identityClientId string
param storageAccountName string
param blobEndpoint string
param queueEndpoint string
param deploymentContainer string
param segmentsContainer string
param reportsContainer string
param keyVaultUrl string
param applicationInsightsConnectionString string
param exportSchedule string
param authClientId string
param maximumInstanceCount int
param instanceMemoryMB int

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225:zone redundancy of a Flex plan is offered in some regions only; a run lost with its instance comes back through its queue message and resumes from its checkpoint
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222:the HTTP API is for people and scripts outside Azure and Event Grid calls the blob webhook; every call needs a function key, and API calls an Entra token too (App Service Authentication)
  // checkov:skip=CKV_AZURE_17:callers authenticate with Entra tokens and function keys; Event Grid cannot present a client certificate to the blob webhook
  // checkov:skip=CKV_AZURE_212:a Flex app scales from zero per event; always-ready instances would bill around the clock for hourly batch runs, and a run whose instance dies comes back through its queue message
  // checkov:skip=CKV_AZURE_78:Flex Consumption does not support FTPS and rejects siteConfig.ftpsState ("properties.ftpsState: FTPS not supported", https://learn.microsoft.com/azure/azure-functions/functions-app-settings#flex-consumption-plan-deprecations); FTP and SCM basic-auth publishing are off below (basicPublishingCredentialsPolicies)
  // checkov:skip=CKV_AZURE_213:health check removes unhealthy instances from a fixed pool behind a load balancer; a Flex app has no fixed pool, and a run whose instance dies comes back through its queue message
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': 'api'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    siteConfig: {
      // No ftpsState: Flex Consumption rejects it (see the CKV_AZURE_78 skip above).
      minTlsVersion: '1.2'
      http20Enabled: true
      // Every setting the app reads that has no default; the README's settings table documents each
      // (tests/test_infra.py checks both ways). Flex sets the runtime itself: no FUNCTIONS_WORKER_RUNTIME.
      appSettings: [
        {
          name: 'AzureWebJobsStorage__accountName'
          value: storageAccountName
        }
        {
          name: 'AzureWebJobsStorage__credential'
          value: 'managedidentity'
        }
        {
          name: 'AzureWebJobsStorage__clientId'
          value: identityClientId
        }
        // Service URIs, not accountName: the blob trigger's SDK-type binding (azurefunctions-extensions-
        // bindings-blob) accepts accountName only for AzureWebJobsStorage. The queue URI is for the blob
        // trigger's poison queue.
        {
          name: 'SegmentsStorage__blobServiceUri'
          value: blobEndpoint
        }
        {
          name: 'SegmentsStorage__queueServiceUri'
          value: queueEndpoint
        }
        {
          name: 'SegmentsStorage__credential'
          value: 'managedidentity'
        }
        {
          name: 'SegmentsStorage__clientId'
          value: identityClientId
        }
        {
          name: 'SEGMENTS_CONTAINER'
          value: segmentsContainer
        }
        {
          name: 'REPORTS_CONTAINER'
          value: reportsContainer
        }
        {
          name: 'EXPORT_SCHEDULE'
          value: exportSchedule
        }
        {
          name: 'KEY_VAULT_URL'
          value: keyVaultUrl
        }
        // DefaultAzureCredential (the Key Vault client) picks the user-assigned identity by this client id.
        {
          name: 'AZURE_CLIENT_ID'
          value: identityClientId
        }
        {
          name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
          value: applicationInsightsConnectionString
        }
        {
          name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
          value: 'ClientId=${identityClientId};Authorization=AAD'
        }
      ]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${blobEndpoint}${deploymentContainer}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

// Deployments go through Entra ID (azd uses the ARM API): no FTP or SCM basic-auth credentials.
resource ftpBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

// App Service Authentication, when an app registration is given: the app refuses every HTTP API call
// without it (WEBSITE_AUTH_ENABLED is how it knows).
module authentication 'authentication.bicep' = if (!empty(authClientId)) {
  name: 'authentication'
  params: {
    siteName: site.name
    clientId: authClientId
  }
}

output name string = site.name
output url string = 'https://${site.properties.defaultHostName}'
