// The vault holding the Klaviyo API keys (one secret per connection). Access is by Azure RBAC only.
param name string
param location string
param tags object

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109:without VNet integration a Flex app has no fixed outbound address to allow, and Azure Functions is not a trusted service of Key Vault; every read needs an Entra token with Key Vault Secrets User
  // checkov:skip=CKV_AZURE_189:without VNet integration a Flex app has no fixed outbound address to allow, and Azure Functions is not a trusted service of Key Vault; every read needs an Entra token with Key Vault Secrets User
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

output name string = vault.name
output uri string = vault.properties.vaultUri
