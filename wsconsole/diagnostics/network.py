"""The network steps of a diagnosis: the name resolves, a TCP connection opens, TLS is sound.

Each takes the options (and what an earlier step found) and returns a `StepResult`; a bad
endpoint is a finding, never an exception. Certificates are read with `cryptography`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import ssl
import time
from typing import Any

from wsconsole.core.tls import client_context
from wsconsole.diagnostics.model import DiagnoseOptions, StepResult, Verdict

EXPIRY_WARN_DAYS = 14


async def check_dns(opts: DiagnoseOptions) -> StepResult:
    """Resolve the host name."""
    title = "Name lookup (DNS)"
    host = opts.host
    try:
        infos = await asyncio.wait_for(
            asyncio.get_running_loop().getaddrinfo(host, opts.port, type=socket.SOCK_STREAM),
            opts.timeout)
    except TimeoutError:
        return StepResult("dns", title, Verdict.FAIL,
                          f"Looking up '{host}' took longer than {opts.timeout:g} s: the DNS "
                          "server of this network is slow or unreachable.", {"host": host})
    except (socket.gaierror, UnicodeError) as exc:
        return StepResult("dns", title, Verdict.FAIL,
                          f"The name '{host}' could not be found: check its spelling, or this "
                          "network cannot resolve it (a VPN or internal DNS may be needed).",
                          {"host": host, "error": str(exc)})
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    return StepResult("dns", title, Verdict.OK,
                      f"'{host}' resolves to {', '.join(addresses[:4])}"
                      + (" ..." if len(addresses) > 4 else "") + ".",
                      {"host": host, "addresses": addresses})


async def check_tcp(opts: DiagnoseOptions, addresses: list[str]) -> StepResult:
    """Open a TCP connection to the first address that accepts one."""
    title = "Network connection (TCP)"
    errors: dict[str, str] = {}
    kinds: set[str] = set()
    for address in addresses:
        began = time.monotonic()
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(address, opts.port),
                                               opts.timeout)
        except TimeoutError:
            errors[address], _ = f"no answer within {opts.timeout:g} s", kinds.add("timeout")
            continue
        except ConnectionRefusedError:
            errors[address], _ = "connection refused", kinds.add("refused")
            continue
        except OSError as exc:
            errors[address], _ = exc.strerror or str(exc), kinds.add("other")
            continue
        took = time.monotonic() - began
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), 1.0)
        except (OSError, TimeoutError):
            pass
        return StepResult("tcp", title, Verdict.OK,
                          f"Port {opts.port} on {address} accepts connections "
                          f"(connected in {took * 1000:.0f} ms).",
                          {"address": address, "port": opts.port,
                           "connect_ms": round(took * 1000, 1), "failed": errors})
    where = f"{opts.host} port {opts.port}"
    if kinds == {"refused"}:
        summary = (f"The host answers, but nothing accepts connections on {where} "
                   "(connection refused): the port is wrong or the service is not running.")
    elif "timeout" in kinds:
        summary = (f"No answer from {where} within {opts.timeout:g} s: a firewall is dropping "
                   "the traffic, or the host is down.")
    else:
        summary = (f"The network cannot reach {where} "
                   f"({'; '.join(sorted(set(errors.values())))}).")
    return StepResult("tcp", title, Verdict.FAIL, summary,
                      {"port": opts.port, "errors": errors})


_VERIFY_WORDS = {
    10: "The server's certificate has expired",
    9: "The server's certificate is not valid yet (check this machine's clock)",
    18: "The server uses a self-signed certificate that this machine does not trust",
    19: "The certificate chain ends in a self-signed authority this machine does not trust",
    20: "The certificate was issued by an authority this machine does not know "
        "(a missing intermediate certificate, or a private CA)",
    21: "The certificate chain is incomplete (the server does not send its intermediate "
        "certificate)",
    62: "The certificate does not cover this host name",
}


def _name(name: Any) -> str:
    """A readable X.509 name (from cryptography's Name)."""
    try:
        return str(name.rfc4514_string())
    except Exception:
        return str(name)


def _certificate_facts(der: bytes | None) -> dict[str, Any]:
    """Subject, issuer, validity and names of a DER certificate (cryptography parses it)."""
    if not der:
        return {}
    try:
        from cryptography import x509
    except ImportError:  # a declared dependency; say so rather than fail the step
        return {"error": "the cryptography package is not installed: no certificate details"}

    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        return {"error": f"unreadable certificate: {exc}"}
    not_after = cert.not_valid_after_utc
    now = dt.datetime.now(dt.UTC)
    facts: dict[str, Any] = {
        "subject": _name(cert.subject),
        "issuer": _name(cert.issuer),
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": not_after.isoformat(),
        "days_left": (not_after - now).days,
        "self_signed": cert.subject == cert.issuer,
        "serial": format(cert.serial_number, "x"),
    }
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        facts["names"] = [str(v) for v in san.value.get_values_for_type(x509.DNSName)] + [
            str(v) for v in san.value.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        facts["names"] = []
    return facts


async def _tls_connect(opts: DiagnoseOptions, address: str,
                       context: ssl.SSLContext) -> ssl.SSLObject:
    """TLS handshake to address:port with SNI = host; returns the SSL object (closed after)."""
    _, writer = await asyncio.wait_for(
        asyncio.open_connection(address, opts.port, ssl=context, server_hostname=opts.host,
                                ssl_handshake_timeout=opts.timeout), opts.timeout)
    ssl_object = writer.get_extra_info("ssl_object")
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), 1.0)
    except (OSError, TimeoutError, ssl.SSLError):
        pass
    assert isinstance(ssl_object, ssl.SSLObject)
    return ssl_object


async def check_tls(opts: DiagnoseOptions, address: str) -> StepResult:
    """Verify the chain against the trust store (or --ca-file) and read the certificate."""
    title = "Secure connection (TLS)"
    context = client_context(opts.ca_file, host=opts.host)
    detail: dict[str, Any] = {"address": address, "sni": opts.host}
    try:
        sslobj = await _tls_connect(opts, address, context)
    except ssl.SSLCertVerificationError as exc:
        detail["verify_code"] = exc.verify_code
        detail["error"] = exc.verify_message or str(exc)
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        try:
            unverified = await _tls_connect(opts, address, insecure)
            detail["protocol"] = unverified.version()
            detail["certificate"] = _certificate_facts(unverified.getpeercert(binary_form=True))
        except (OSError, TimeoutError, ssl.SSLError) as second:
            detail["certificate_error"] = str(second)
        words = _VERIFY_WORDS.get(exc.verify_code or 0, "The server's certificate is not "
                                  "trusted by this machine")
        cert = detail.get("certificate") or {}
        if exc.verify_code == 10 and cert.get("not_after"):
            words += f" (on {cert['not_after'][:10]}, {-cert['days_left']} day(s) ago)"
        verdict = Verdict.WARN if opts.insecure else Verdict.FAIL
        suffix = (": browsers and clients will refuse to connect." if not opts.insecure else
                  "; continuing because --insecure was given.")
        return StepResult("tls", title, verdict, words + suffix, detail)
    except ssl.SSLError as exc:
        detail["error"] = str(exc)
        return StepResult("tls", title, Verdict.FAIL,
                          "The secure connection could not be set up (TLS "
                          f"{exc.reason or 'error'}): the port may not speak TLS, or it only "
                          "offers outdated protocols.", detail)
    except TimeoutError:
        return StepResult("tls", title, Verdict.FAIL,
                          f"The TLS handshake did not finish within {opts.timeout:g} s.", detail)
    except OSError as exc:
        detail["error"] = str(exc)
        return StepResult("tls", title, Verdict.FAIL,
                          f"The connection dropped during the TLS handshake ({exc}).", detail)
    version = sslobj.version() or "?"
    cipher = sslobj.cipher()
    cert = _certificate_facts(sslobj.getpeercert(binary_form=True))
    chain_fn = getattr(sslobj, "get_verified_chain", None)  # Python 3.13+
    detail.update({"protocol": version, "cipher": cipher[0] if cipher else None,
                   "verified": True, "certificate": cert})
    if chain_fn is not None:
        try:
            detail["chain"] = [_certificate_facts(c.public_bytes(ssl.Encoding.DER)).get("subject")
                               for c in chain_fn()]
        except Exception:  # the chain is a bonus on newer Pythons
            pass
    days = cert.get("days_left")
    summary = (f"The certificate for {opts.host} is trusted (issued by "
               f"{cert.get('issuer', '?')}), valid until {str(cert.get('not_after', '?'))[:10]}"
               f"; protocol {version}.")
    verdict = Verdict.OK
    if isinstance(days, int) and days < EXPIRY_WARN_DAYS:
        verdict = Verdict.WARN
        summary += f" It expires in {days} day(s): renew it soon."
    if version in ("TLSv1", "TLSv1.1", "SSLv3"):
        verdict = Verdict.WARN
        summary += f" {version} is outdated: enable TLS 1.2 or 1.3."
    return StepResult("tls", title, verdict, summary, detail)
