"""A real SMTP server for the notification tests (aiosmtpd).

Listens on --host/--port (0 picks a free port), prints "LISTENING <port>"
once it accepts connections, and writes every message it accepts to
--dir as <n>.json: the envelope, whether the session was encrypted and
authenticated, every header and every MIME part decoded. The message is
written to a temporary name first and renamed, so a reader never sees a
partial file.

  --tls-cert/--tls-key  certificate for STARTTLS (or implicit TLS)
  --require-starttls    refuse MAIL before STARTTLS
  --no-starttls         do not offer STARTTLS at all
  --implicit-tls        TLS from the first byte (smtps, port 465 style)
  --auth USER:PASS      offer AUTH (only over TLS) and require it
"""

import argparse
import asyncio
import email
import email.policy
import json
import logging
import os
import ssl
import sys
import warnings

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class Recorder:
    def __init__(self, directory):
        self.directory = directory
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        parts = []
        for part in message.walk():
            if part.is_multipart():
                continue
            parts.append({"contentType": part.get_content_type(), "content": part.get_content()})
        record = {
            "mailFrom": envelope.mail_from,
            "rcptTos": envelope.rcpt_tos,
            "tls": server.transport.get_extra_info("ssl_object") is not None,
            "authenticated": bool(session.authenticated),
            "contentType": message.get_content_type(),
            "headers": [[name, str(value)] for name, value in message.items()],
            "parts": parts,
        }
        path = os.path.join(self.directory, f"{self.count:04}.json")
        with open(path + ".tmp", "w", encoding="utf-8") as out:
            json.dump(record, out)
        os.rename(path + ".tmp", path)
        return "250 OK"


def authenticator(expected):
    def check(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and (
            auth_data.login.decode(),
            auth_data.password.decode(),
        ) == expected
        return AuthResult(success=ok, handled=False)

    return check


async def main():
    # aiosmtpd warns about AUTH without STARTTLS even over implicit TLS,
    # and logs every session; the tests read the messages, not the log.
    warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--require-starttls", action="store_true")
    parser.add_argument("--no-starttls", action="store_true")
    parser.add_argument("--implicit-tls", action="store_true")
    parser.add_argument("--auth")
    args = parser.parse_args()

    context = None
    if args.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.tls_cert, args.tls_key)

    options = {"hostname": "smtp.test", "enable_SMTPUTF8": True}
    if context is not None and not args.implicit_tls and not args.no_starttls:
        options["tls_context"] = context
        options["require_starttls"] = args.require_starttls
    if args.auth:
        user, password = args.auth.split(":", 1)
        options["authenticator"] = authenticator((user, password))
        options["auth_required"] = True
        # Over implicit TLS the whole session is encrypted already.
        options["auth_require_tls"] = not args.implicit_tls

    handler = Recorder(args.dir)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, **options),
        host=args.host,
        port=args.port,
        ssl=context if args.implicit_tls else None,
    )
    port = server.sockets[0].getsockname()[1]
    print(f"LISTENING {port}", flush=True)
    # Stop when the test closes our stdin (or dies).
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await reader.read()
    server.close()


if __name__ == "__main__":
    asyncio.run(main())
