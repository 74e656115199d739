# git configuration for a private config repo: [ { key; value; } ], given where the secret
# will be at run time (a credential directory for the dashboard, the file itself for the
# agent). Only paths appear here: the secret is read when git runs, never copied.
{
  lib,
  cred,
  keyPath,
  tokenPath,
  knownHostsFile,
}:
let
  q = lib.escapeShellArg;
  ssh = lib.concatStringsSep " " (
    [
      "ssh -i ${q keyPath} -o IdentitiesOnly=yes -o BatchMode=yes"
    ]
    ++ lib.optional (knownHostsFile != null) "-o UserKnownHostsFile=${q knownHostsFile} -o StrictHostKeyChecking=yes"
  );
  # git runs a "!" helper through sh with the action ("get", "store", …) as $1.
  helper = "!f() { test \"$1\" = get || exit 0; printf 'username=%s\\n' ${q cred.username}; printf 'password=%s\\n' \"$(cat ${q tokenPath})\"; }; f";
in
lib.optional (cred.sshKeyFile != null) {
  key = "core.sshCommand";
  value = ssh;
}
++ lib.optional (cred.tokenFile != null) {
  key = "credential.helper";
  value = helper;
}
