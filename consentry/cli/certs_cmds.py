"""``consentry certs``: the certificates that sign C2PA manifests (``HOME/pki``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from consentry.cli.common import HomeOpt, JsonOpt, emit_json
from consentry.config import Home, resolve_home

__all__ = ["app"]

app = typer.Typer(help="Certificates that sign C2PA manifests.", no_args_is_help=True)


def _home_root(home: Path | None) -> Path:
    """The registry home folder; ConfigError (exit 2) when there is no registry there."""
    root = Home(resolve_home(home))
    root.read_config()
    return root.root


def _describe(cert: dict[str, Any]) -> str:
    return (
        f"  {cert['role']}: {cert['subject']}\n"
        f"    issuer {cert['issuer']}\n"
        f"    valid {cert['not_before']} .. {cert['not_after']}\n"
        f"    sha256 {cert['sha256']}"
    )


@app.command("show")
def show(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Show the active signing identity: its chain, root, algorithm and key."""
    from consentry.provenance import certs

    info = certs.certs_info(_home_root(home))
    if as_json:
        emit_json(info)
        return
    held = "held in the home" if info["key_held"] else "not held here (KMS/HSM)"
    typer.echo(f"identity: {info['kind']} ({info['alg']}), key {held}")
    typer.echo(f"folder:   {info['pki_dir']}")
    for cert in info["chain"]:
        typer.echo(_describe(cert))
    if info["root"] is not None:
        typer.echo(_describe(info["root"]))
    else:
        typer.echo("  root: none in the home (readers need your organisation's root)")


@app.command("export-root")
def export_root(
    file: Annotated[Path, typer.Argument(help="Where to write the root certificate (PEM).")],
    home: HomeOpt = None,
) -> None:
    """Write the root certificate readers must trust to verify this registry's outputs."""
    from consentry.provenance import certs

    target = certs.export_root(_home_root(home), file)
    typer.echo(f"root certificate written to {target}")


@app.command("use")
def use(
    chain: Annotated[
        Path, typer.Option("--chain", help="PEM chain: signer certificate first, then issuers.")
    ],
    key: Annotated[
        Path | None,
        typer.Option("--key", help="The signer's PEM private key (omit if it lives in a KMS)."),
    ] = None,
    root: Annotated[
        Path | None, typer.Option("--root", help="The root the chain must end at (PEM).")
    ] = None,
    home: HomeOpt = None,
) -> None:
    """Sign manifests with your organisation's chain instead of the development PKI."""
    from consentry.provenance import certs

    paths = certs.use_chain(_home_root(home), chain, key, root_file=root)
    typer.echo(f"signing identity: custom chain in {paths.custom_dir}")


@app.command("init")
def init(
    alg: Annotated[
        str, typer.Option("--alg", help="Key algorithm of the dev PKI: es256 or ed25519.")
    ] = "es256",
    days: Annotated[int, typer.Option("--days", help="Validity of the signer, in days.")] = 730,
    home: HomeOpt = None,
) -> None:
    """Create a development PKI (root -> intermediate -> signer) in a home without one."""
    from consentry.provenance import certs

    if alg not in ("es256", "ed25519"):
        raise typer.BadParameter("--alg must be es256 or ed25519")
    chosen: certs.DevAlg = "es256" if alg == "es256" else "ed25519"
    paths = certs.create_dev_pki(_home_root(home), alg=chosen, days=days)
    typer.echo(f"development PKI created; root certificate: {paths.root_cert}")
