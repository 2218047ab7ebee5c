# A system user owns the database; an admin token is made once (0600).
getent passwd assessment-cp >/dev/null ||
    useradd --system --user-group --home-dir /var/lib/assessment-control-plane --shell /sbin/nologin assessment-cp
install -d -m 0700 -o assessment-cp -g assessment-cp /var/lib/assessment-control-plane
token=/etc/assessment-control-plane/admin-token.env
if [ ! -e "$token" ]; then
    (umask 077; printf 'ACP_ADMIN_TOKEN=%s\n' "$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')" >"$token")
fi
if [ -d /run/systemd/system ]; then systemctl daemon-reload || :; fi
