#!/bin/sh
# Vault password source for ansible.cfg (vault_password_file).
#  - $BLOBSHIFT_VAULT_PASSWORD_FILE set: print the first line of that file (CI, lab, scripts);
#  - otherwise, on a terminal: ask for it;
#  - otherwise: fail with a message saying what to set.
# The lab's password is environments/local/LAB-ONLY-vault-password.txt: lab only, never
# reuse it for an environment that holds real secrets.
if [ -n "${BLOBSHIFT_VAULT_PASSWORD_FILE:-}" ]; then
    if [ ! -r "$BLOBSHIFT_VAULT_PASSWORD_FILE" ]; then
        echo "BLOBSHIFT_VAULT_PASSWORD_FILE=$BLOBSHIFT_VAULT_PASSWORD_FILE is not a readable file:" \
            "point it to the file holding this environment's vault password" >&2
        exit 1
    fi
    head -n 1 "$BLOBSHIFT_VAULT_PASSWORD_FILE"
    exit 0
fi
if [ -r /dev/tty ] && [ -w /dev/tty ] && (: </dev/tty) 2>/dev/null; then
    printf 'Vault password for this environment: ' >/dev/tty
    stty -echo </dev/tty 2>/dev/null
    IFS= read -r password </dev/tty
    stty echo </dev/tty 2>/dev/null
    printf '\n' >/dev/tty
    printf '%s\n' "$password"
    exit 0
fi
echo "no vault password: set BLOBSHIFT_VAULT_PASSWORD_FILE to a file holding it" \
    "(lab: environments/local/LAB-ONLY-vault-password.txt)" >&2
exit 1
