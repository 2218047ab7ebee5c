# The state directory exists before the first start (enrollment stores the
# credentials in it); only root may read it.
install -d -m 0700 /var/lib/assessment-runtime
if [ -d /run/systemd/system ]; then systemctl daemon-reload || :; fi
