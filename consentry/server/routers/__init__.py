"""The service's route groups, one router each: ``gateway`` (grantee key),
``admin`` (admin key), ``public`` (no key but ``/v1/audit``) and ``tiles`` (the
log in the tlog-tiles shape, no key). Each reads the app's shared state through
:data:`consentry.server.state.ServiceDep`."""
