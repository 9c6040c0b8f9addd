"""The real-Home-Assistant check (tools/ha_check.sh): a client for HA's REST and websocket
APIs and the check itself, run on the host against HA in its Debian trixie root."""
