// The whole deployment for `azd up`: one resource group holding the Flex Consumption Function App, its
// storage account (reached by identity only), Key Vault, monitoring and the Event Grid system topic.
// The topic's subscription needs the deployed code: infra/blob-events.bicep, run by the postdeploy hook.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('azd environment name: names the resource group and tags every resource.')
param environmentName string

@minLength(1)
@description('Region of every resource; it must offer the Flex Consumption plan.')
param location string

@minLength(2)
@maxLength(6)
@description('Short lowercase prefix of every resource name (letters and digits).')
param namePrefix string = 'kse'

@description('Resource group name; empty: rg-<environmentName>.')
param resourceGroupName string = ''

@description('NCRONTAB schedule of the scheduled_exports timer (EXPORT_SCHEDULE).')
param exportSchedule string = '0 0 * * * *'

@description('Object id of the person deploying (azd fills AZURE_PRINCIPAL_ID): may then put the Klaviyo key in the vault and drop segment files. Empty: no role for a person.')
param principalId string = ''

@description('Client id of the Entra app registration (app roles Admin and Contributor) that App Service Authentication checks callers against. Empty: no authentication is configured and the app refuses every HTTP API call.')
param authClientId string = ''

@maxLength(4)
@description('Appended to the Key Vault\'s name (lowercase letters and digits). Empty until the first `azd down`; then the postdown hook (infra/hooks/new_vault_suffix.py) sets KEY_VAULT_SUFFIX anew, because the deleted vault keeps its name for 90 days (purge protection).')
param keyVaultSuffix string = ''

@minValue(40)
@maxValue(1000)
@description('Most instances the Flex plan scales out to; runs on one Klaviyo account share its rate limits anyway.')
param maximumInstanceCount int = 40

@allowed([
  512
  2048
  4096
])
@description('Memory of one instance in MB (a 10-million-row run peaks near 400 MB).')
param instanceMemoryMB int = 2048

@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
@description('Replication of the storage account (segments are copies; runs can be repeated).')
param storageSku string = 'Standard_LRS'

var tags = {
  'azd-env-name': environmentName
}
var token = toLower(uniqueString(subscription().id, environmentName, location))
var prefix = toLower(namePrefix)
var segmentsContainer = 'segments'
var reportsContainer = 'reports'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: empty(resourceGroupName) ? 'rg-${environmentName}' : resourceGroupName
  location: location
  tags: tags
}

module identity 'app/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: 'id-${prefix}-${token}'
    location: location
    tags: tags
  }
}

module storage 'app/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: take('st${prefix}${token}', 24)
    location: location
    tags: tags
    segmentsContainer: segmentsContainer
    reportsContainer: reportsContainer
    systemTopicName: 'evgt-${prefix}-${token}'
    sku: storageSku
  }
}

module vault 'app/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    // Soft-deleted vaults keep their names (https://learn.microsoft.com/azure/key-vault/general/soft-delete-change):
    // keyVaultSuffix makes the name after an `azd down` a new one; the token is shortened to fit 24 characters.
    name: '${take('kv-${prefix}-${token}', 24 - length(keyVaultSuffix))}${keyVaultSuffix}'
    location: location
    tags: tags
  }
}

module monitoring 'app/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    workspaceName: 'log-${prefix}-${token}'
    applicationInsightsName: 'appi-${prefix}-${token}'
    location: location
    tags: tags
  }
}

module roles 'app/roles.bicep' = {
  name: 'roles'
  scope: rg
  params: {
    identityPrincipalId: identity.outputs.principalId
    storageAccountName: storage.outputs.name
    keyVaultName: vault.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    deployerPrincipalId: principalId
  }
}

module functionApp 'app/function.bicep' = {
  name: 'function'
  scope: rg
  params: {
    name: 'func-${prefix}-${token}'
    planName: 'plan-${prefix}-${token}'
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    blobEndpoint: storage.outputs.blobEndpoint
    queueEndpoint: storage.outputs.queueEndpoint
    deploymentContainer: storage.outputs.deploymentContainer
    segmentsContainer: segmentsContainer
    reportsContainer: reportsContainer
    keyVaultUrl: vault.outputs.uri
    applicationInsightsConnectionString: monitoring.outputs.connectionString
    exportSchedule: exportSchedule
    authClientId: authClientId
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
  }
  // The host starts with these settings: its identity must already hold its storage roles.
  dependsOn: [
    roles
  ]
}

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output FUNCTION_APP_URL string = functionApp.outputs.url
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_KEY_VAULT_NAME string = vault.outputs.name
output AZURE_KEY_VAULT_ENDPOINT string = vault.outputs.uri
output AZURE_MANAGED_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.applicationInsightsName
output EVENT_GRID_SYSTEM_TOPIC_NAME string = storage.outputs.systemTopicName
output SEGMENTS_CONTAINER string = segmentsContainer
output REPORTS_CONTAINER string = reportsContainer
