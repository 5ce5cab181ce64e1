"""Catalogue profiles: where each public STAC API keeps Sentinel-2 L2A and Sentinel-1, and what it needs.

A :class:`Catalogue` names the STAC API, its collections, the asset key of every band coal-prepare
reads, whether asset URLs must be signed, and which credentials a collection needs. Two public
catalogues have profiles; any other STAC API is used by URL, its assets found by the band names in
``eo:bands`` (or given as a band -> asset-key mapping).

========================  =================================================  ==========================
profile                   Sentinel-2 L2A / Sentinel-1                        credentials
========================  =================================================  ==========================
``earth-search``          ``sentinel-2-l2a`` (COGs on AWS, public) /         none for Sentinel-2;
(Element 84, v1)          ``sentinel-1-grd`` (GRD parts on s3://, requester  ``sentinel-1-grd`` needs AWS
                          pays)                                              credentials
``planetary-computer``    ``sentinel-2-l2a`` (COGs on Azure, signed URLs) /  none for Sentinel-2 and
(Microsoft)               ``sentinel-1-rtc`` (gamma0 RTC COGs),              GRD; ``sentinel-1-rtc``
                          ``sentinel-1-grd`` (GRD parts, COG measurements)   needs an account key
========================  =================================================  ==========================

Credentials come from environment variables or the tools' own configuration files (the
Planetary Computer's ``~/.planetarycomputer/settings.env``), never from coalmine's TOML. They are
checked before the first request, so a missing one is one line naming the variable.

Example:
    >>> cat = resolve_catalogue("earth-search")
    >>> cat.s2_collection, cat.assets["B08"], cat.assets["SCL"]
    ('sentinel-2-l2a', 'nir', 'scl')
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any
from urllib.parse import urlparse

from .._optional import optional_import
from ..bands import S2_BANDS
from ..errors import UsageError

#: Sentinel-1 choices: RTC / sigma0 COG collections, GRD products, or no Sentinel-1.
S1_CHOICES = ("rtc", "grd", "none")
#: The asset names a fetch needs besides the nine reflectance bands.
SCL, VV = "SCL", "VV"
#: The parts of a Sentinel-1 GRD product, as asset mapping names (see fetch/grd.py).
GRD_ASSET_NAMES = ("VV", "VV_ANNOTATION", "VV_CALIBRATION", "VV_NOISE", "MANIFEST")
#: What the requester-pays S3 assets need: these variables, or a profile in the AWS files.
AWS_KEY_ENVS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
AWS_CREDENTIALS_FILE = "~/.aws/credentials"
#: The environment variable holding a Planetary Computer account key (its SDK's own name).
PC_KEY_ENV = "PC_SDK_SUBSCRIPTION_KEY"
PC_SETTINGS_FILE = "~/.planetarycomputer/settings.env"


class CredentialsError(UsageError):
    """A credential the chosen catalogue or collection needs is not set (exit code 2)."""


@dataclass(frozen=True)
class Catalogue:
    """One STAC API and how coalmine reads Sentinel-2 / Sentinel-1 from it.

    Attributes:
        name: profile name, or the URL for a catalogue without a profile.
        url: the STAC API's landing page.
        s2_collection: the Sentinel-2 L2A collection.
        s1_collections: ``"rtc"``/``"grd"`` -> collection id, for the kinds the catalogue has.
        assets: band (``B02`` ... ``B12``, ``SCL``, ``VV``, and the GRD parts ``VV_ANNOTATION``,
            ``VV_CALIBRATION``, ``VV_NOISE``, ``MANIFEST``) -> asset key; a band not listed is
            found by its ``eo:bands`` name (``VV`` by the key ``vv``, GRD parts by the keys
            of fetch/grd.py).
        signing: ``"planetary-computer"`` when asset URLs need a SAS token, else None.
        key_envs: collection kind -> environment variables it needs (checked before any request).
        token_env: environment variable with a bearer token for the catalogue (and for assets on
            the catalogue's own host; never sent elsewhere).
        s3_region: AWS region of the catalogue's ``s3://`` assets (requester-pays buckets).
    """

    name: str
    url: str
    s2_collection: str = "sentinel-2-l2a"
    s1_collections: Mapping[str, str] = field(default_factory=lambda: MappingProxyType(
        {"rtc": "sentinel-1-rtc", "grd": "sentinel-1-grd"}))
    assets: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    signing: str | None = None
    key_envs: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))
    token_env: str | None = None
    s3_region: str | None = None

    def s1_collection(self, kind: str) -> str:
        """The collection of Sentinel-1 ``kind`` ("rtc"/"grd"), or a UsageError saying what there is."""
        if kind not in self.s1_collections:
            have = ", ".join(f"--s1 {k}" for k in self.s1_collections) or "none"
            raise UsageError(
                f"--s1 {kind}: the catalogue {self.name} has no Sentinel-1 {kind.upper()} collection "
                f"(it has: {have}); choose another --catalog (e.g. planetary-computer for RTC) or --s1 none"
            )
        return self.s1_collections[kind]

    def headers(self) -> dict[str, str]:
        """HTTP headers for the catalogue (a bearer token from ``token_env``)."""
        if self.token_env:
            return {"Authorization": f"Bearer {os.environ[self.token_env]}"}
        return {}

    def same_host(self, href: str) -> bool:
        return urlparse(href).netloc == urlparse(self.url).netloc


_S2_SAME = {b: b for b in (*S2_BANDS, "SCL")}

#: The catalogues with a profile. Asset keys are those of the catalogues' published items.
PROFILES: Mapping[str, Catalogue] = MappingProxyType({
    "earth-search": Catalogue(
        name="earth-search",
        url="https://earth-search.aws.element84.com/v1",
        s2_collection="sentinel-2-l2a",
        s1_collections=MappingProxyType({"grd": "sentinel-1-grd"}),
        assets=MappingProxyType({
            "B02": "blue", "B03": "green", "B04": "red", "B05": "rededge1", "B06": "rededge2",
            "B07": "rededge3", "B08": "nir", "B11": "swir16", "B12": "swir22", "SCL": "scl",
        }),
        key_envs=MappingProxyType({"grd": AWS_KEY_ENVS}),
        s3_region="eu-central-1",  # the bucket sentinel-s1-l1c (requester pays)
    ),
    "planetary-computer": Catalogue(
        name="planetary-computer",
        url="https://planetarycomputer.microsoft.com/api/stac/v1",
        s2_collection="sentinel-2-l2a",
        s1_collections=MappingProxyType({"rtc": "sentinel-1-rtc", "grd": "sentinel-1-grd"}),
        assets=MappingProxyType({**_S2_SAME, "VV": "vv"}),
        signing="planetary-computer",
        key_envs=MappingProxyType({"rtc": (PC_KEY_ENV,)}),
    ),
})
DEFAULT_CATALOG = "planetary-computer"


def resolve_catalogue(catalog: str, *, collections: Mapping[str, str] | None = None,
                      assets: Mapping[str, str] | None = None, token_env: str | None = None,
                      signing: str | None = None, option: str = "--catalog") -> Catalogue:
    """The :class:`Catalogue` for a profile name or a STAC API URL, with overrides applied.

    Args:
        catalog: ``earth-search``, ``planetary-computer`` or an ``http(s)://`` STAC API URL.
        collections: ``{"s2": id, "rtc": id, "grd": id}`` overrides (``"s1"`` means the RTC one).
        assets: band -> asset key overrides (``B02`` ... ``B12``, ``SCL``, ``VV``, GRD parts).
        token_env: environment variable holding a bearer token for this catalogue.
        signing: ``"planetary-computer"`` to sign asset URLs (a profile sets it itself).
        option: how the caller names the setting, for messages.

    Raises:
        UsageError: an unknown profile name, a non-http URL, an unknown band or collection kind.
    """
    if catalog in PROFILES:
        cat = PROFILES[catalog]
    elif urlparse(catalog).scheme in ("http", "https") and urlparse(catalog).netloc:
        cat = Catalogue(name=catalog, url=catalog.rstrip("/"))
    else:
        raise UsageError(
            f"{option} '{catalog}' is neither a known catalogue ({', '.join(PROFILES)}) nor the "
            "http(s):// URL of a STAC API; use one of those names or the API's URL"
        )
    if collections:
        s1c = dict(cat.s1_collections)
        s2c = cat.s2_collection
        for k, v in collections.items():
            if k == "s2":
                s2c = v
            elif k in ("s1", "rtc"):
                s1c["rtc"] = v
            elif k == "grd":
                s1c["grd"] = v
            else:
                raise UsageError(f"{option}: collection kind '{k}' is not one of s2, s1 (= rtc), grd")
        cat = replace(cat, s2_collection=s2c, s1_collections=MappingProxyType(s1c))
    if assets:
        known = (*S2_BANDS, SCL, *GRD_ASSET_NAMES)
        for b in assets:
            if b not in known:
                raise UsageError(f"{option}: asset mapping names '{b}', which is not one of {' '.join(known)}")
        cat = replace(cat, assets=MappingProxyType({**cat.assets, **assets}))
    if token_env:
        cat = replace(cat, token_env=token_env)
    if signing:
        if signing != "planetary-computer":
            raise UsageError(f"{option}: signing '{signing}' is not supported; use \"planetary-computer\"")
        cat = replace(cat, signing=signing)
    return cat


def check_credentials(cat: Catalogue, s1: str) -> None:
    """Refuse at once, naming the variable, when a credential the fetch needs is not set.

    Raises:
        CredentialsError: ``token_env`` unset, or a collection's key (e.g. the Planetary
            Computer's account key for ``sentinel-1-rtc``) in neither the environment nor the
            tool's own settings file.
    """
    if cat.token_env and not os.environ.get(cat.token_env):
        raise CredentialsError(
            f"the catalogue {cat.name} needs the environment variable {cat.token_env} (token_env), "
            "which is not set; export it with the catalogue's access token"
        )
    needs = cat.key_envs.get(s1, ()) if s1 != "none" else ()
    if needs and set(needs) <= set(AWS_KEY_ENVS) and aws_profile_configured():
        return
    for var in needs:
        if _credential(var):
            continue
        if var in AWS_KEY_ENVS:
            raise CredentialsError(
                f"Sentinel-1 {s1.upper()} from {cat.name} ({cat.s1_collections.get(s1, s1)}) is in a "
                f"requester-pays S3 bucket and needs AWS credentials: the environment variable {var} is not "
                f"set and {AWS_CREDENTIALS_FILE} has no profile {os.environ.get('AWS_PROFILE') or 'default'}; "
                "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (the account pays for the bytes read), "
                "or pass --s1 none"
            )
        where = f" or in {PC_SETTINGS_FILE} (planetarycomputer configure)" if var == PC_KEY_ENV else ""
        raise CredentialsError(
            f"Sentinel-1 {s1.upper()} from {cat.name} ({cat.s1_collections.get(s1, s1)}) needs the "
            f"environment variable {var}, which is not set{where}; set it, or pass --s1 none"
        )


def aws_profile_configured() -> bool:
    """True when the AWS files name credentials for ``AWS_PROFILE`` (default ``default``), or the
    environment points at a web-identity or container credential source -- the places boto3 and
    GDAL look besides ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``."""
    import configparser

    if os.environ.get("AWS_WEB_IDENTITY_TOKEN_FILE") or os.environ.get("AWS_CONTAINER_CREDENTIALS_FULL_URI") \
            or os.environ.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"):
        return True
    profile = os.environ.get("AWS_PROFILE") or os.environ.get("AWS_DEFAULT_PROFILE") or "default"
    files = ((os.environ.get("AWS_SHARED_CREDENTIALS_FILE") or AWS_CREDENTIALS_FILE, profile),
             (os.environ.get("AWS_CONFIG_FILE") or "~/.aws/config",
              profile if profile == "default" else f"profile {profile}"))
    for path, section in files:
        cp = configparser.RawConfigParser()
        try:
            cp.read(os.path.expanduser(path), encoding="utf-8")
        except (configparser.Error, OSError, UnicodeDecodeError):
            continue
        if cp.has_section(section) and any(cp.has_option(section, k) for k in (
                "aws_access_key_id", "credential_process", "sso_session", "sso_start_url", "role_arn")):
            return True
    return False


def _credential(var: str) -> str | None:
    if os.environ.get(var):
        return os.environ[var]
    if var == PC_KEY_ENV:  # the SDK's own settings file, read the way the SDK reads it
        path = os.path.expanduser(PC_SETTINGS_FILE)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                for line in f:
                    k, _, v = line.strip().partition("=")
                    if k.strip() == var and v.strip().strip("'\""):
                        return v.strip().strip("'\"")
    return None


def sign_href(cat: Catalogue, href: str) -> str:
    """The URL to open for an asset: signed with a SAS token for the Planetary Computer, else as is."""
    if cat.signing != "planetary-computer":
        return href
    planetary_computer = optional_import("planetary_computer", purpose="signing Planetary Computer asset URLs")
    return str(planetary_computer.sign(href))


def asset_key(cat: Catalogue, item: dict[str, Any], band: str) -> str | None:
    """The key of ``band``'s asset in ``item``: from the profile/mapping, else by ``eo:bands`` name.

    Only raster assets with an http(s) URL count (Earth Search also lists JPEG 2000 copies on s3://).
    """
    assets = item.get("assets", {})
    if band in cat.assets:
        key = cat.assets[band]
        return key if key in assets else None
    wanted = band.lower() if band in (SCL, VV) else None
    found: list[str] = []
    for key, a in assets.items():
        href = str(a.get("href", ""))
        if urlparse(href).scheme not in ("http", "https"):
            continue
        if wanted is not None:
            if key.lower() == wanted:
                found.append(key)
            continue
        names = [b.get("name") for b in (a.get("eo:bands") or a.get("bands") or [])]
        if names == [band]:
            found.append(key)
    if not found:
        return None
    # a COG before any other encoding of the same band
    found.sort(key=lambda k: ("cloud-optimized" not in str(assets[k].get("type", "")), k))
    return found[0]
