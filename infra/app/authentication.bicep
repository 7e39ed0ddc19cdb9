// App Service Authentication (Easy Auth) with Entra ID: callers need a token for the app registration
// clientId; the app reads their roles (Admin, Contributor) from the x-ms-client-principal header that
// only this layer can set. The blob extension's webhook is excluded: Event Grid calls it with the
// blobs_extension key instead of a token.
param siteName string
param clientId string

resource site 'Microsoft.Web/sites@2024-04-01' existing = {
  name: siteName
}

resource authentication 'Microsoft.Web/sites/config@2024-04-01' = {
  // checkov:skip=CKV_AZURE_13:checkov reads the v1 authsettings shape (properties.enabled); this v2 resource enables authentication with platform.enabled, which CKV_AZURE_56 checks and passes
  // checkov:skip=CKV_AZURE_63:checkov applies checks of the site's 'web' config to every sites/config resource; this one holds authentication only
  // checkov:skip=CKV_AZURE_65:checkov applies checks of the site's 'web' config to every sites/config resource; this one holds authentication only
  // checkov:skip=CKV_AZURE_66:checkov applies checks of the site's 'web' config to every sites/config resource; this one holds authentication only
  // checkov:skip=CKV_AZURE_80:checkov applies checks of the site's 'web' config to every sites/config resource; this one holds authentication only (and the app is Python, not .NET)
  // checkov:skip=CKV_AZURE_88:checkov applies checks of the site's 'web' config to every sites/config resource; this one holds authentication only
  // checkov:skip=CKV_AZURE_222:checkov applies checks of the site's 'web' config to every sites/config resource; public access of the site is decided (and skipped with its reason) on the site
  parent: site
  name: 'authsettingsV2'
  properties: {
    platform: {
      enabled: true
    }
    globalValidation: {
      requireAuthentication: true
      unauthenticatedClientAction: 'Return401'
      excludedPaths: [
        '/runtime/webhooks/blobs'
      ]
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: clientId
          openIdIssuer: '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
        }
        validation: {
          allowedAudiences: [
            'api://${clientId}'
          ]
        }
      }
    }
    login: {
      tokenStore: {
        enabled: false
      }
    }
  }
}
