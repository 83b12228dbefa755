"""Certificates for TLS tests, made with the openssl command line in the test's directory."""
from __future__ import annotations

import os
import subprocess


def openssl(*args: str, cwd) -> None:
    subprocess.run(['openssl'] + list(args), cwd=cwd, check=True, capture_output=True, timeout=30)


def make_certs(directory) -> dict[str, str]:
    """A test CA, a good server cert, a wrong-name one (same CA) and an untrusted one."""
    d = str(directory)
    openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out',
            'ca.pem', '-days', '2', '-subj', '/CN=rtpc test CA', cwd=d)

    def server(name: str, san: str, ca: bool) -> None:
        with open(os.path.join(d, name + '.ext'), 'w') as f:
            f.write('subjectAltName=%s\n' % san)
        if ca:
            openssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', name + '.key', '-out',
                    name + '.csr', '-subj', '/CN=' + name, cwd=d)
            openssl('x509', '-req', '-in', name + '.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key',
                    '-CAcreateserial', '-out', name + '.pem', '-days', '2', '-extfile',
                    name + '.ext', cwd=d)
        else:
            openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', name + '.key',
                    '-out', name + '.pem', '-days', '2', '-subj', '/CN=' + name, '-addext',
                    'subjectAltName=' + san, cwd=d)
    server('good', 'IP:127.0.0.1,DNS:localhost', True)
    server('wrongname', 'DNS:wrong.example', True)
    server('rogue', 'IP:127.0.0.1,DNS:localhost', False)
    return {name: os.path.join(d, name) for name in ('ca', 'good', 'wrongname', 'rogue')}
