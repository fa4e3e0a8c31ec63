"""st2common.constants.keyvalue as squall provides it: the names of the datastore's scopes."""

SYSTEM_SCOPE = "system"
FULL_SYSTEM_SCOPE = "st2kv.system"
USER_SCOPE = "user"
FULL_USER_SCOPE = "st2kv.user"
ALLOWED_SCOPES = [SYSTEM_SCOPE, USER_SCOPE, FULL_SYSTEM_SCOPE, FULL_USER_SCOPE]
DATASTORE_KEY_SEPARATOR = ":"
