"""The SuperLink's front door: nginx, so that only the operator can use its control side.

Why a proxy, and not Flower's own: in flwr 1.42 one HTTPS port (`--host/--port`)
serves the SuperNodes (`/v1/fleet/`), the `flwr` CLI (`/v1/control/`: register and
unregister SuperNode keys; start, stop and list runs; their logs and artifacts) and
the ServerApp (`/v1/runtime/`), and nothing checks who calls the control routes.
What Flower offers for it does not close that door:

- account authentication (`flwr login`) needs an OIDC plugin that only Flower's
  enterprise edition has ("OIDC account authentication is unavailable in this
  Flower distribution");
- `--control-api-address` is deprecated and binds only the old gRPC Control API
  (behind `FLWR_INTERNAL_GRPC_CONTROL_API=1`); the HTTP control routes stay on the
  main port;
- the SuperLink's TLS (uvicorn) is configured without client certificates, and
  the `flwr` CLI cannot present one;
- `--superexec-auth-secret-file` guards only the Runtime API's acquire-task, and
  only with `--isolation process` (it is ignored with the default subprocess
  isolation, which leaves acquire-task open as well).

So the SuperLink listens on its own machine's loopback (127.0.0.1) only, and nginx
(Debian's package, a standard TLS-terminating reverse proxy) listens where the data
holders dial. `front_door()`: TLS with the SuperLink's certificate; `/v1/fleet/` is
passed on for every SuperNode, where Flower's SuperNode authentication admits
registered keys only; `/v1/control/` only for a client certificate signed by the
federation's CA with the operator's name (`fedcore.deploy.pki`); everything else,
the Runtime API included, is refused. Since `flwr` cannot present a certificate,
`operator_side()` runs where the operator runs `flwr`: a listener on that machine's
loopback that forwards to the front door over TLS with the operator's certificate.

Refusals are JSON `{"detail": ...}`, which the `flwr` CLI prints as its error.
"""

from __future__ import annotations

import argparse
import ipaddress
import shutil
import sys
from pathlib import Path

from fedcore.deploy.pki import (
    CA_FILE,
    CERT_FILE,
    KEY_FILE,
    OPERATOR_CERT_FILE,
    OPERATOR_KEY_FILE,
    OPERATOR_NAME,
)

# In single quotes in nginx.conf: no apostrophes, no `$`.
NOT_THE_OPERATOR = (
    "fedcore front door: only the operator (its client certificate) may use the control "
    "side of this SuperLink"
)
NOT_HERE = "fedcore front door: only /v1/fleet/ (SuperNodes) and /v1/control/ (the operator)"
SUPERLINK_NAME = "localhost"  # the SuperLink's certificate names it: the hop on its machine


def nginx() -> str | None:
    """Debian's nginx (in /usr/sbin, which a user's PATH may lack), if installed."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


def command(config: Path, error_log: Path) -> list[str]:
    """nginx in the foreground with this configuration (`-e`: before it is read)."""
    binary = nginx()
    if binary is None:
        raise FileNotFoundError("nginx")
    return [binary, "-e", str(error_log), "-c", str(config)]


def _refuse(message: str) -> str:
    return f'return 403 \'{{"detail": "{message}"}}\';'


def front_door(listen: str, superlink: str, pki: Path, logs: Path) -> str:
    """The server in front of the SuperLink (`superlink`: its loopback address):
    SuperNodes through, the control side for the operator's certificate only."""
    upstream = f"""
            proxy_pass https://fedcore_superlink;
            proxy_ssl_trusted_certificate {pki / CA_FILE};
            proxy_ssl_verify on;
            proxy_ssl_name {SUPERLINK_NAME};"""
    return f"""
    map "$ssl_client_verify $ssl_client_s_dn" $fedcore_operator {{
        "SUCCESS CN={OPERATOR_NAME}" 1;
        default 0;
    }}
    upstream fedcore_superlink {{
        server {superlink};
        keepalive 8;
    }}
    server {{
        listen {listen} ssl;
        access_log {logs / "front-door.log"};
        ssl_certificate {pki / CERT_FILE};
        ssl_certificate_key {pki / KEY_FILE};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_client_certificate {pki / CA_FILE};
        ssl_verify_client optional;
        ssl_verify_depth 1;
        default_type application/json;

        location /v1/fleet/ {{{upstream}
        }}
        location /v1/control/ {{
            if ($fedcore_operator = 0) {{ {_refuse(NOT_THE_OPERATOR)} }}{upstream}
        }}
        location / {{ {_refuse(NOT_HERE)} }}
    }}
"""


def operator_side(listen: str, door: str, door_name: str, pki: Path) -> str:
    """Where `flwr` runs: a loopback listener that forwards to the front door `door`
    (whose certificate names `door_name`, a DNS name: nginx does not check IP
    addresses) with the operator's client certificate."""
    return f"""
    server {{
        listen {listen};
        access_log off;  # the front door logs every request
        location / {{
            proxy_pass https://{door};
            proxy_ssl_certificate {pki / OPERATOR_CERT_FILE};
            proxy_ssl_certificate_key {pki / OPERATOR_KEY_FILE};
            proxy_ssl_trusted_certificate {pki / CA_FILE};
            proxy_ssl_verify on;
            proxy_ssl_name {door_name};
            proxy_ssl_server_name on;
        }}
    }}
"""


def config(servers: str, state: Path, logs: Path) -> str:
    """A whole nginx.conf around `servers`: in the foreground, its pid and temporary
    folders in `state`, its logs in `logs`. Nothing is buffered to disk (requests and
    replies stream through, and `flwr run --stream` and `flwr log` stream for long)."""
    temp = "\n".join(
        f"    {kind}_temp_path {state / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""# made by fedcore.deploy.proxy
daemon off;
worker_processes 1;
pid {state / "nginx.pid"};
error_log {logs / "nginx-error.log"} notice;
events {{
    worker_connections 512;
}}
http {{
{temp}
    client_max_body_size 0;  # as the SuperLink itself (Flower sends arrays in chunks)
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_buffering off;
    proxy_request_buffering off;
    proxy_read_timeout 1h;
    proxy_send_timeout 1h;
{servers}
}}
"""


def _is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    """`python -m fedcore.deploy.proxy front-door|operator-side ...`: print the
    nginx.conf for real machines (the README's recipe), as `fedcore deploy` makes it."""
    parser = argparse.ArgumentParser(
        prog="python -m fedcore.deploy.proxy",
        description="Print an nginx.conf: the SuperLink's front door, or the operator's side.",
        allow_abbrev=False,
    )
    sides = parser.add_subparsers(dest="side", required=True)
    door = sides.add_parser("front-door", help="for the SuperLink's machine")
    door.add_argument("--listen", default="0.0.0.0:9091", help="where the data holders dial")
    door.add_argument(
        "--superlink", default="127.0.0.1:9092", help="the SuperLink, on this machine's loopback"
    )
    operator = sides.add_parser("operator-side", help="for the machine where `flwr` runs")
    operator.add_argument("--listen", default="127.0.0.1:9093", help="where `flwr` connects")
    operator.add_argument("--door", required=True, help="the front door: HOST:PORT")
    operator.add_argument(
        "--door-name",
        help="the DNS name in the front door's certificate (default: HOST; nginx checks "
        "names, not IP addresses)",
    )
    for side in (door, operator):
        side.add_argument("--pki", required=True, help="the folder with ca.pem and the keys")
        side.add_argument("--folder", required=True, help="nginx's pid, temporary files, logs")
    args = parser.parse_args(argv)
    pki, folder = Path(args.pki).resolve(), Path(args.folder).resolve()
    if args.side == "front-door":
        servers = front_door(args.listen, args.superlink, pki, folder)
    else:
        name = args.door_name or args.door.rpartition(":")[0]
        if _is_ip_address(name):
            parser.error(f"--door {args.door}: nginx verifies the front door by a DNS name "
                         "in its certificate, not an IP address: give --door-name")  # fmt: skip
        servers = operator_side(args.listen, args.door, name, pki)
    print(config(servers, folder, folder), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
