"""Wait until a device's retained MQTT status says ``online`` (used by the Ansible role).

    python -m tools.wait_online --host H --topic edge-face/<id>/status [--port P] [--timeout S]
        [--username U --password-stdin] [--tls [--cafile F] [--cert F --key F]]

The password is read from standard input, never from argv (a process list shows argv to
every user of the controller). Prints the status seen and exits 0 on ``online``, 1 on
another status or none within the timeout, 2 when the broker refuses or cannot be reached.
"""

from __future__ import annotations

import argparse
import sys
import threading

ONLINE = "online"


def wait_for_status(args: argparse.Namespace, password: str | None) -> tuple[int, str]:
    """Connect, read the retained status; returns (exit code, one-line message)."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    if args.username:
        client.username_pw_set(args.username, password)
    if args.tls:
        client.tls_set(ca_certs=args.cafile, certfile=args.cert, keyfile=args.key)
    seen: dict[str, str] = {}
    done = threading.Event()

    def on_connect(client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            seen["refused"] = str(reason_code)
            done.set()
        else:
            client.subscribe(args.topic, qos=1)

    def on_message(client, userdata, message):
        seen["status"] = message.payload.decode("utf-8", "replace")
        if seen["status"] == ONLINE:
            done.set()

    client.on_connect, client.on_message = on_connect, on_message
    try:
        client.connect(args.host, args.port, keepalive=30)
    except (OSError, ValueError) as exc:
        return 2, f"wait_online: broker {args.host}:{args.port} unreachable ({exc})"
    client.loop_start()
    try:
        done.wait(args.timeout)
    finally:
        client.loop_stop()
        client.disconnect()
    if "refused" in seen:
        return 2, f"wait_online: broker {args.host}:{args.port} refused the connection ({seen['refused']})"
    status = seen.get("status")
    if status == ONLINE:
        return 0, ONLINE
    return 1, f"wait_online: '{args.topic}' is {status!r} after {args.timeout:g} s, not 'online'"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.wait_online", description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, default=None, help="default 1883, or 8883 with --tls")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--username")
    parser.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    parser.add_argument("--tls", action="store_true")
    parser.add_argument("--cafile")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    args = parser.parse_args(argv)
    args.port = args.port or (8883 if args.tls else 1883)
    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else None
    code, message = wait_for_status(args, password)
    print(message, file=sys.stdout if code == 0 else sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
