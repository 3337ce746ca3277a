"""A real Asterisk and a real callgate, started in a temporary directory, for the e2e suite.

The PBX under test runs the shipped ``asterisk-conf/`` dialplan, ``features.conf`` and the AMI user
``callgate`` of ``manager.conf`` unchanged. Its phones are real PJSIP endpoints named and
configured as the shipped ``pjsip.conf`` does (``acme_100`` ... with ``set_var`` and named groups),
so that everything the dialplan relies on is the real thing: ``PJSIP/<endpoint>-<hex>`` channel
names, endpoint variables, named pickup groups and PJSIP's built-in ``pickupexten`` check.

The handsets are simulated by the same Asterisk over a second SIP transport on loopback:

    test --AMI Originate--> PJSIP/<code>@sim_acme_100 --INVITE--> transport "pbx" --> acme_100
                                                                 (From: acme_100)  context
                                                                                   callgate-acme
    callgate-acme: Dial(PJSIP/acme_101) --INVITE--> transport "phones" --> endpoint "pbx",
                                                                           [sim-phone] rings or
                                                                           answers (AstDB sim/)

Calls from outside are Local channels into the client's context. Only the stdlib and aiohttp
are used; the AMI client is the minimum the tests need.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from support import free_port

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "asterisk-conf"

AMI_TESTER = ("tester", "tester-secret")
AMI_CALLGATE_SECRET = "e2e-callgate-ami-secret"
ADMIN_TOKEN = "e2e-admin-token"

# (client, extension) of every phone of the PBX under test
PHONES = (
    ("acme", "100"),
    ("acme", "101"),
    ("acme", "102"),
    ("acme", "103"),
    ("globex", "200"),
    ("globex", "201"),
)

Message = Mapping[str, str]
Popen = subprocess.Popen[bytes]


# ------------------------------------------------------------------------------ finding Asterisk


def find_asterisk() -> Path | None:
    """ASTERISK_BIN, else ``asterisk`` on PATH (or in the usual sbin directories)."""
    if explicit := os.environ.get("ASTERISK_BIN"):
        path = Path(explicit)
        return path if path.is_file() and os.access(path, os.X_OK) else None
    found = shutil.which("asterisk") or shutil.which(
        "asterisk", path="/usr/sbin:/usr/local/sbin:/sbin"
    )
    return Path(found) if found else None


def skip_without_asterisk() -> None:
    """Skip the calling test module (with the reason ``-ra`` shows) when there is no Asterisk."""
    if find_asterisk() is None:
        pytest.skip(
            "no Asterisk binary: set ASTERISK_BIN=/path/to/asterisk (or put asterisk on PATH)"
            " to run the real-Asterisk suite",
            allow_module_level=True,
        )


def _first_dir(candidates: list[Path], must_contain: str | None = None) -> Path | None:
    for candidate in candidates:
        if candidate.is_dir() and (must_contain is None or (candidate / must_contain).exists()):
            return candidate
    return None


def find_module_dir(binary: Path) -> Path | None:
    if explicit := os.environ.get("ASTERISK_MODDIR"):
        return Path(explicit)
    prefix = binary.resolve().parent.parent
    return _first_dir(
        [
            prefix / "lib" / "asterisk" / "modules",
            prefix / "lib64" / "asterisk" / "modules",
            prefix / "lib" / "x86_64-linux-gnu" / "asterisk" / "modules",
            prefix / "lib" / "aarch64-linux-gnu" / "asterisk" / "modules",
            Path("/usr/lib/asterisk/modules"),
            Path("/usr/lib64/asterisk/modules"),
            Path("/usr/local/lib/asterisk/modules"),
        ],
        must_contain="chan_pjsip.so",
    )


def find_data_dir(binary: Path) -> Path | None:
    """Where the sound prompts are (the dialplan plays a few; without them it still works)."""
    if explicit := os.environ.get("ASTERISK_DATADIR"):
        return Path(explicit)
    prefix = binary.resolve().parent.parent
    return _first_dir(
        [
            Path("/usr/share/asterisk"),
            Path("/var/lib/asterisk"),
            prefix / "share" / "asterisk",
            prefix / "var" / "lib" / "asterisk",
        ],
        must_contain="sounds",
    )


# ------------------------------------------------------------------------------ ports


def free_udp_range(size: int) -> int:
    """The first port of ``size`` consecutive free UDP ports (even, as RTP wants)."""
    for _ in range(50):
        base = free_port(socket.SOCK_DGRAM) & ~1
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + size):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
        return base
    raise RuntimeError(f"no {size} consecutive free UDP ports on loopback")


def wait_for_tcp(port: int, within: float, alive: Callable[[], bool]) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"the process exited before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {within}s")


def log_tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def spawn(command: list[str], log: Path, env: Mapping[str, str] | None = None) -> Popen:
    """Start ``command`` in its own session, output appended to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


def terminate(process: Popen | None, grace: float) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


# ------------------------------------------------------------------------------ Asterisk


@dataclass(frozen=True, slots=True)
class PbxPorts:
    ami: int
    sip_pbx: int
    sip_phones: int
    rtp_start: int
    agi: int


def _shipped_manager_user() -> str:
    """The shipped [callgate] AMI user, unchanged but for its secret."""
    text = (SHIPPED / "manager.conf").read_text()
    header = re.search(r"^\[callgate\]$", text, re.MULTILINE)
    assert header is not None, "the shipped manager.conf has a [callgate] section"
    section = text[header.start() :]
    lines = [
        f"secret = {AMI_CALLGATE_SECRET}" if line.strip().startswith("secret") else line
        for line in section.splitlines()
    ]
    return "\n".join(lines) + "\n"


def _pjsip_conf(ports: PbxPorts) -> str:
    out = [
        f"[t-pbx]\ntype = transport\nprotocol = udp\nbind = 127.0.0.1:{ports.sip_pbx}\n",
        f"[t-phones]\ntype = transport\nprotocol = udp\nbind = 127.0.0.1:{ports.sip_phones}\n",
        # The simulated handsets' side: every INVITE from the PBX (From: pbx) lands here.
        "[pbx]\ntype = endpoint\ntransport = t-phones\ncontext = sim-phone\n"
        "disallow = all\nallow = ulaw\ndirect_media = no\n",
    ]
    for client, ext in PHONES:
        name = f"{client}_{ext}"
        # The PBX's phone, configured as the shipped pjsip.conf does (no auth on loopback).
        out.append(
            f"[{name}]\ntype = endpoint\ntransport = t-pbx\ncontext = callgate-{client}\n"
            "disallow = all\nallow = ulaw\ndirect_media = no\nallow_overlap = no\n"
            f"set_var = CALLGATE_CLIENT={client}\nset_var = CALLGATE_EXT={ext}\n"
            f"named_call_group = {client}\nnamed_pickup_group = {client}\n"
            f'callerid = "{name}" <{ext}>\nfrom_user = pbx\naors = {name}\n'
        )
        out.append(f"[{name}]\ntype = aor\ncontact = sip:{name}@127.0.0.1:{ports.sip_phones}\n")
        # Its handset, dialing: INVITE sip:<code>@pbx-transport, From: <client>_<ext>.
        out.append(
            f"[sim_{name}]\ntype = endpoint\ntransport = t-phones\ncontext = sim-phone\n"
            f"disallow = all\nallow = ulaw\ndirect_media = no\nfrom_user = {name}\n"
            f"aors = sim_{name}\n"
        )
        out.append(f"[sim_{name}]\ntype = aor\ncontact = sip:127.0.0.1:{ports.sip_pbx}\n")
    return "\n".join(out)


_TEST_DIALPLAN = """
[globals]
CALLGATE_AGI={agi}
{pbx}CALLGATE_RING_SECONDS=60

; A handset receiving a call: rings, or answers when the test put sim/<endpoint>=answer in AstDB.
; The handset's channel is in AstDB simchan/<endpoint>, with a detector of the notice tone.
; Once answered it sends audio all the time, as a real phone's RTP does: ChanSpy ends (a Hangup of
; the spier included) only once a frame has passed through the spied-on channel, so a silent call
; would hold a hung-up listener's channel open until that call ends.
[sim-phone]
exten => _[a-z].,1,GotoIf($["${{DB(sim/${{EXTEN}})}}" = "answer"]?answer)
 same => n,Ringing()
 same => n,Wait(120)
 same => n,Hangup()
 same => n(answer),Set(DB(simchan/${{EXTEN}})=${{CHANNEL(name)}})
 ; What the handset hears of the notice (1400 Hz; its own 440 Hz is sent, not received).
 same => n,Set(TONE_DETECT(1400,300,r)=)
 same => n,Answer()
 same => n,Playtones(440)
 same => n,Wait(120)
 same => n,Hangup()

; A caller from outside that, once answered, sends audio all the time (silence), as a trunk's
; RTP does: audio barged or whispered into a call is mixed into the frames its other party sends.
[sim-caller]
exten => s,1,PlayTones(0)
 same => n,Wait(120)
 same => n,Hangup()

; A handset that has dialed a code and, once answered, types SIM_DIGITS on its keypad.
[sim-keypad]
exten => s,1,Wait(1.5)
 same => n,SendDTMF(${{SIM_DIGITS}})
 same => n,Wait(20)
 same => n,Hangup()
"""

_MODULES_CONF = """
[modules]
autoload = yes
; Nothing that listens on a network port of its own, needs hardware, or is irrelevant here.
noload = chan_iax2.so
noload = chan_unistim.so
noload = chan_mgcp.so
noload = chan_skinny.so
noload = chan_dahdi.so
noload = chan_console.so
noload = chan_alsa.so
noload = chan_oss.so
noload = chan_motif.so
noload = chan_ooh323.so
noload = pbx_dundi.so
noload = pbx_lua.so
noload = pbx_ael.so
noload = res_xmpp.so
noload = res_snmp.so
noload = res_hep.so
noload = res_hep_pjsip.so
noload = res_hep_rtcp.so
noload = res_phoneprov.so
noload = res_pjsip_phoneprov_provider.so
noload = res_stun_monitor.so
noload = res_calendar.so
noload = res_smdi.so
noload = res_config_ldap.so
noload = res_config_pgsql.so
noload = cdr_radius.so
noload = cel_radius.so
noload = cdr_pgsql.so
noload = cel_pgsql.so
noload = cdr_tds.so
noload = cel_tds.so
noload = res_corosync.so
"""


@dataclass
class Asterisk:
    """One Asterisk process with its configuration in ``root``."""

    binary: Path
    root: Path
    ports: PbxPorts
    agi: str | None = None
    """The dialplan's CALLGATE_AGI; None: ``127.0.0.1:<ports.agi>`` (the one-address shorthand)."""
    pbx_name: str | None = None
    """The dialplan's CALLGATE_PBX (a ``[pbx.<name>]`` of callgate's); None: the shipped one."""
    process: Popen | None = None

    @property
    def log(self) -> Path:
        return self.root / "asterisk.out"

    def write_config(self, module_dir: Path, data_dir: Path | None) -> None:
        etc = self.root / "etc"
        for sub in ("etc", "db", "keys", "agi", "spool", "run", "log", "varlib", "data"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        for name in (
            "extensions_callgate.conf",
            "extensions_callgate_tenants.conf",
            "features.conf",
        ):
            shutil.copy(SHIPPED / name, etc / name)
        directories = {
            "astetcdir": etc,
            "astmoddir": module_dir,
            "astvarlibdir": self.root / "varlib",
            "astdbdir": self.root / "db",
            "astkeydir": self.root / "keys",
            "astdatadir": data_dir or self.root / "data",
            "astagidir": self.root / "agi",
            "astspooldir": self.root / "spool",
            "astrundir": self.root / "run",
            "astlogdir": self.root / "log",
            "astsbindir": self.binary.parent,
        }
        (self.root / "asterisk.conf").write_text(
            "[directories]\n"
            + "".join(f"{key} => {value}\n" for key, value in directories.items())
            + "[options]\nverbose = 3\n"
        )
        (etc / "modules.conf").write_text(_MODULES_CONF)
        (etc / "logger.conf").write_text(
            "[general]\n[logfiles]\nmessages.log => notice,warning,error,verbose\n"
        )
        (etc / "rtp.conf").write_text(
            f"[general]\nrtpstart = {self.ports.rtp_start}\nrtpend = {self.ports.rtp_start + 99}\n"
        )
        (etc / "manager.conf").write_text(
            "[general]\nenabled = yes\n"
            f"port = {self.ports.ami}\nbindaddr = 127.0.0.1\ndisplayconnects = no\n\n"
            + _shipped_manager_user()
            + f"\n[{AMI_TESTER[0]}]\nsecret = {AMI_TESTER[1]}\n"
            "deny = 0.0.0.0/0.0.0.0\npermit = 127.0.0.1/255.255.255.255\n"
            "read = all\nwrite = all\n"
        )
        (etc / "pjsip.conf").write_text(_pjsip_conf(self.ports))
        (etc / "extensions.conf").write_text(
            "[general]\nstatic = yes\nwriteprotect = yes\n\n"
            "#include extensions_callgate.conf\n"
            "#include extensions_callgate_tenants.conf\n"
            + _TEST_DIALPLAN.format(
                agi=self.agi or f"127.0.0.1:{self.ports.agi}",
                pbx=f"CALLGATE_PBX={self.pbx_name}\n" if self.pbx_name else "",
            )
        )

    def start(self) -> None:
        self.process = spawn(
            [str(self.binary), "-C", str(self.root / "asterisk.conf"), "-f", "-n", "-vvv"],
            self.log,
        )
        try:
            wait_for_tcp(self.ports.ami, 30, lambda: self.alive)
        except (RuntimeError, TimeoutError) as exc:
            self.stop()
            raise RuntimeError(f"Asterisk did not start: {exc}\n{log_tail(self.log)}") from exc

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        terminate(self.process, grace=10)
        self.process = None


# ------------------------------------------------------------------------------ callgate


@dataclass
class Callgate:
    """``python -m callgate serve`` on loopback, with its data in ``root``."""

    root: Path
    agi_port: int
    http_port: int
    ami_port: int
    db: str | None = None
    """``--db``: None for the SQLite file in ``root``, else e.g. a ``postgresql://`` address."""
    config: Path | None = None
    """``--config``: a TOML file naming the PBXes (``[pbx.<name>]``) instead of ``--ami`` (then
    ``ami_port`` is not used)."""
    process: Popen | None = None

    @property
    def log(self) -> Path:
        return self.root / "callgate.out"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, *, require_ami: bool = True) -> None:
        """Start and wait for /readyz (with the Manager connection up, unless told otherwise)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("CALLGATE_")}
        env |= {
            "CALLGATE_ADMIN_TOKEN": ADMIN_TOKEN,
            "CALLGATE_AMI_SECRET": AMI_CALLGATE_SECRET,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")])),
        }
        self.process = spawn(
            [
                sys.executable,
                "-m",
                "callgate",
                "serve",
                "--agi",
                f"127.0.0.1:{self.agi_port}",
                "--http",
                f"127.0.0.1:{self.http_port}",
                "--data-dir",
                str(self.root / "data"),
                *(
                    ["--config", str(self.config)]
                    if self.config
                    else ["--ami", f"127.0.0.1:{self.ami_port}", "--ami-user", "callgate"]
                ),
                *(["--db", self.db] if self.db else []),
            ],
            self.log,
            env,
        )
        try:
            self._wait_ready(within=30, require_ami=require_ami)
        except (RuntimeError, TimeoutError) as exc:
            self.stop()
            raise RuntimeError(f"callgate did not get ready: {exc}\n{log_tail(self.log)}") from exc

    def _wait_ready(self, within: float, require_ami: bool) -> None:
        """/readyz 200, with the Manager connection up (live enforcement on) if required."""
        deadline = time.monotonic() + within
        last = "no answer"
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError("callgate exited")
            try:
                with urllib.request.urlopen(  # noqa: S310 - a fixed http://127.0.0.1 URL
                    f"{self.base_url}/readyz", timeout=1
                ) as response:
                    body = json.loads(response.read())
                    if body.get("ami") == "up" or not require_ami:
                        return
                    last = repr(body)
            except OSError as exc:
                last = str(exc)
            time.sleep(0.1)
        raise TimeoutError(f"/readyz after {within}s: {last}")

    def stop(self) -> None:
        terminate(self.process, grace=15)  # callgate finishes its sessions first
        self.process = None

    def agi_sessions(self) -> float:
        """FastAGI sessions this process has seen, every outcome (``/metrics``)."""
        with urllib.request.urlopen(  # noqa: S310 - a fixed http://127.0.0.1 URL
            f"{self.base_url}/metrics", timeout=5
        ) as response:
            text = response.read().decode()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("callgate_agi_sessions_total{")
        )


@dataclass
class Pbx:
    """The PBX under test and the callgate it asks."""

    asterisk: Asterisk
    callgate: Callgate


@dataclass
class Api:
    """callgate's HTTP API as the admin."""

    http: aiohttp.ClientSession
    base: str

    async def put_policy(self, client: str, document: dict[str, Any]) -> None:
        url = f"{self.base}/client/{client}/call_control_group/"
        async with self.http.put(url, json=document) as response:
            assert response.status == 200, await response.text()

    async def reset(self, client: str) -> None:
        url = f"{self.base}/client/{client}/call_control_group/"
        async with self.http.delete(url) as response:
            assert response.status in (200, 204), await response.text()
        async with self.http.get(f"{self.base}/client/{client}/replacements") as response:
            assert response.status == 200, await response.text()
            phones = [r["phone"] for r in (await response.json())["replacements"]]
        for phone in phones:
            async with self.http.delete(
                f"{self.base}/client/{client}/replacements/{phone}"
            ) as response:
                assert response.status in (200, 204), await response.text()

    async def put_settings(self, client: str, settings: dict[str, Any]) -> None:
        url = f"{self.base}/client/{client}/call_control_settings"
        async with self.http.put(url, json=settings) as response:
            assert response.status == 200, await response.text()

    async def post_grant(self, client: str, grant: dict[str, Any]) -> dict[str, Any]:
        """``POST /client/{client}/grants``; the stored grant (with its ``id``)."""
        async with self.http.post(f"{self.base}/client/{client}/grants", json=grant) as response:
            assert response.status == 201, await response.text()
            stored: dict[str, Any] = await response.json()
            return stored

    async def delete_grant(self, client: str, grant_id: str) -> None:
        url = f"{self.base}/client/{client}/grants/{grant_id}"
        async with self.http.delete(url) as response:
            assert response.status == 204, await response.text()

    async def audit(self, client: str, **filters: str) -> list[dict[str, Any]]:
        """``GET /client/{client}/audit``'s events, newest first."""
        url = f"{self.base}/client/{client}/audit"
        async with self.http.get(url, params=filters) as response:
            assert response.status == 200, await response.text()
            events: list[dict[str, Any]] = (await response.json())["events"]
            return events

    async def policy_version(self, client: str) -> int:
        """The version this instance decides by now (``check`` reads the FastAGI registry)."""
        url = f"{self.base}/client/{client}/call_control_group/check"
        async with self.http.get(url, params={"action": "pickup", "ext": "100"}) as response:
            assert response.status == 200, await response.text()
            version = (await response.json())["policy_version"]
            assert isinstance(version, int)
            return version

    async def set_pin(self, client: str, ext: str, pin: str) -> None:
        url = f"{self.base}/client/{client}/extension/{ext}/replace_pin"
        async with self.http.put(url, json={"pin": pin}) as response:
            assert response.status == 204, await response.text()


@contextlib.asynccontextmanager
async def admin_api(callgate: Callgate) -> AsyncIterator[Api]:
    """``callgate``'s HTTP API with the admin token, for as long as the block runs."""
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        yield Api(http, callgate.base_url)


# ------------------------------------------------------------------------------ AMI client


class AmiError(Exception):
    """The Manager refused an action, or did not answer in time."""


@dataclass
class Ami:
    """The least AMI client the tests need: actions by ActionID, events kept in order."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    events: list[Message] = field(default_factory=list)
    _times: list[float] = field(default_factory=list)
    _pending: dict[str, asyncio.Future[Message]] = field(default_factory=dict)
    _lists: dict[str, list[Message]] = field(default_factory=dict)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _task: asyncio.Task[None] | None = None

    @classmethod
    async def connect(cls, port: int, username: str, secret: str) -> Ami:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port), timeout=5
        )
        banner = await asyncio.wait_for(reader.readline(), timeout=5)
        if not banner.startswith(b"Asterisk Call Manager/"):
            raise AmiError(f"not an Asterisk Manager: {banner!r}")
        ami = cls(reader, writer)
        ami._task = asyncio.create_task(ami._read())
        await ami.action("Login", Username=username, Secret=secret, Events="on")
        return ami

    async def close(self) -> None:
        with contextlib.suppress(OSError, AmiError, TimeoutError):
            await asyncio.wait_for(self.action("Logoff"), timeout=1)
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _read(self) -> None:
        message: dict[str, str] = {}
        while line := await self.reader.readline():
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            if text:
                key, _, value = text.partition(":")
                message.setdefault(key.strip(), value.strip())
                continue
            if message:
                await self._dispatch(message)
            message = {}
        for future in self._pending.values():
            if not future.done():
                future.set_exception(AmiError("the Manager closed the connection"))

    async def _dispatch(self, message: Message) -> None:
        action_id = message.get("ActionID", "")
        if "Response" in message and action_id in self._pending:
            future = self._pending.pop(action_id)
            if not future.done():
                future.set_result(message)
        elif "Event" in message:
            if action_id in self._lists:
                self._lists[action_id].append(message)
            async with self._changed:
                self.events.append(message)
                self._times.append(time.monotonic())
                self._changed.notify_all()

    def _send(self, name: str, headers: Mapping[str, str]) -> tuple[str, bytes]:
        action_id = f"t{next(self._ids)}"
        lines = [f"Action: {name}", f"ActionID: {action_id}"]
        lines += [f"{key}: {value}" for key, value in headers.items()]
        return action_id, ("\r\n".join(lines) + "\r\n\r\n").encode()

    async def action(self, name: str, within: float = 10, **headers: str) -> Message:
        """Send an action; its response, which must be ``Success``."""
        response = await self.action_any(name, within, **headers)
        if response.get("Response") != "Success":
            raise AmiError(f"{name}: {dict(response)}")
        return response

    async def action_any(self, name: str, within: float = 10, **headers: str) -> Message:
        """Send an action; its response, whatever it says."""
        action_id, data = self._send(name, headers)
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[action_id] = future
        self.writer.write(data)
        await self.writer.drain()
        try:
            return await asyncio.wait_for(future, within)
        except TimeoutError as exc:
            raise AmiError(f"{name}: no response in {within}s") from exc

    async def list_action(
        self, name: str, complete: str, within: float = 10, **headers: str
    ) -> list[Message]:
        """A list action: the item events, up to its ``<complete>`` event."""
        action_id, data = self._send(name, headers)
        items: list[Message] = []
        self._lists[action_id] = items
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[action_id] = future
        self.writer.write(data)
        await self.writer.drain()
        try:
            async with asyncio.timeout(within):
                response = await future
                if response.get("Response") != "Success":
                    return []
                await self._wait(lambda: any(e.get("Event") == complete for e in items))
        finally:
            self._lists.pop(action_id, None)
        return [e for e in items if e.get("Event") != complete]

    @property
    def connected(self) -> bool:
        """The connection is still read (Asterisk has not closed it, nor have we)."""
        return self._task is not None and not self._task.done()

    def received_at(self, message: Message) -> float:
        """``time.monotonic()`` when ``message`` (an event of ``events``) was read."""
        index = next(i for i, e in enumerate(self.events) if e is message)
        return self._times[index]

    def mark(self) -> int:
        """A position in the event stream: ``wait_event(since=mark)`` looks after it."""
        return len(self.events)

    async def _wait(self, ready: Callable[[], bool]) -> None:
        async with self._changed:
            await self._changed.wait_for(ready)

    async def wait_event(
        self, matches: Callable[[Message], bool], since: int, within: float = 10
    ) -> Message:
        found: list[Message] = []

        def ready() -> bool:
            found[:] = [e for e in self.events[since:] if matches(e)]
            return bool(found)

        try:
            async with asyncio.timeout(within):
                await self._wait(ready)
        except TimeoutError as exc:
            raise AmiError(f"no such event within {within}s") from exc
        return found[0]

    def events_since(self, since: int, matches: Callable[[Message], bool]) -> list[Message]:
        return [e for e in self.events[since:] if matches(e)]


def event(name: str, **fields: str) -> Callable[[Message], bool]:
    """A predicate: event ``name`` whose fields equal, or start with (``prefix*``), the values."""

    def matches(message: Message) -> bool:
        if message.get("Event") != name:
            return False
        for key, expected in fields.items():
            actual = message.get(key, "")
            if expected.endswith("*"):
                if not actual.startswith(expected[:-1]):
                    return False
            elif actual != expected:
                return False
        return True

    return matches
