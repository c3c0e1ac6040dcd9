"""Write the demo provider's users file from the demo users' password files.

    demo_users.py SPEC.json PASSWORDS_DIR USERS.json GROUP
SPEC: [{"login", "sub", "email", "name", "entitlements"}]. Each password is kept as a scrypt hash
(node's crypto.scryptSync defaults: N=16384, r=8, p=1); a hash that still matches its password is
kept, so that the file changes only when a user, a group or a password does. Prints CHANGED then."""

import grp
import hashlib
import json
import os
import secrets
import sys


def scrypt(password: str, salt: bytes) -> str:
    return salt.hex() + ":" + hashlib.scrypt(password.encode(), salt=salt, n=16384, r=8, p=1, dklen=64).hex()


def matches(stored: str, password: str) -> bool:
    try:
        salt, _ = stored.split(":")
        return secrets.compare_digest(scrypt(password, bytes.fromhex(salt)), stored)
    except ValueError:
        return False


def main(spec_path, passwords_dir, users_path, group):
    spec = json.load(open(spec_path))
    try:
        old = {u["login"]: u for u in json.load(open(users_path))["users"]}
    except (OSError, ValueError, KeyError):
        old = {}
    users = []
    for person in spec:
        password = open(os.path.join(passwords_dir, person["login"])).read().strip()
        kept = old.get(person["login"], {}).get("password_scrypt", "")
        stored = kept if matches(kept, password) else scrypt(password, secrets.token_bytes(16))
        users.append({**person, "password_scrypt": stored})
    text = json.dumps({"users": users}, indent=1, sort_keys=True) + "\n"
    try:
        if open(users_path).read() == text:
            return
    except OSError:
        pass
    tmp = users_path + ".new"
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640), "w") as f:
        f.write(text)
    os.chown(tmp, 0, grp.getgrnam(group).gr_gid)  # readable by the provider from the first moment
    os.replace(tmp, users_path)
    print("CHANGED")


if __name__ == "__main__":
    main(*sys.argv[1:5])
