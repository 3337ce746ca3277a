"""The shipped Asterisk configuration keeps its security rules; the checker catches breakage.

Runs without Asterisk. ``callgate.asterisk_conf`` reads ``asterisk-conf/`` the way Asterisk does;
each broken copy below must be caught by the rule named in its row, so a checker that stopped
checking would fail here too.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from callgate import asterisk_conf as check

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "asterisk-conf"


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    copy = tmp_path / "asterisk-conf"
    shutil.copytree(CONF, copy)
    return copy


def rules(directory: Path) -> set[str]:
    return {f.rule for f in check.check_directory(directory)}


def edit(path: Path, old: str, new: str, *, extension: str | None = None) -> None:
    """Replace ``old`` (which must be there) by ``new``, within one extension if named."""
    text = path.read_text()
    if extension is None:
        assert old in text, f"{old!r} not in {path.name}"
        path.write_text(text.replace(old, new))
        return
    start = text.index(f"exten => {extension},")
    end = text.find("\nexten => ", start + 1)
    end = len(text) if end < 0 else end
    block = text[start:end]
    assert old in block, f"{old!r} not in extension {extension}"
    path.write_text(text[:start] + block.replace(old, new) + text[end:])


def test_shipped_configuration_keeps_every_rule() -> None:
    findings = check.check_directory(CONF)
    assert findings == [], "\n".join(map(str, findings))


EXT = "extensions_callgate.conf"
VERDICT = '"${AGISTATUS}" = "SUCCESS" & "${CALLGATE_DECISION}" = "ALLOW"'
RETRY = 'GotoIf($["${CALLGATE_DECISION}" = ""]?next)'

# A table reads better one row per case than as ruff would lay it out.
# fmt: off
BROKEN = [
    # (id, file, extension or None, old, new, rule that must catch it)
    ("listen-checks-agistatus-only", EXT, "listen", VERDICT, '"${AGISTATUS}" = "SUCCESS"',
     "guarded"),
    ("pickup-or-instead-of-and", EXT, "pickup", VERDICT,
     '"${AGISTATUS}" = "SUCCESS" | "${CALLGATE_DECISION}" = "ALLOW"', "agi-check"),
    ("pickup-branches-swapped", EXT, "pickup", f"{VERDICT}]?:deny", f"{VERDICT}]?deny:",
     "guarded"),
    ("pickup-before-asking", EXT, "pickup", "n(ask),Set(CG_AGIS=",
     "n,Pickup(${CALLGATE_PICKUP})\n same => n(ask),Set(CG_AGIS=", "guarded"),
    ("whisper-decision-used-for-pickup", EXT, "whisper", "ChanSpy(${CG_SPYEE},qESuw)",
     "Pickup(${ARG2})", "guarded"),
    ("verdict-check-not-next", EXT, "restore", ",${CALLGATE_PBX})\n",
     ",${CALLGATE_PBX})\n same => n,Wait(1)\n", "agi-check"),
    ("listen-with-dtmf-switching", EXT, "listen", "qESu)", "qESud)", "chanspy"),
    ("listen-with-barge", EXT, "listen", "qESu)", "qESuB)", "chanspy"),
    ("listen-can-whisper", EXT, "listen", "qESu)", "qESuw)", "chanspy"),
    ("listen-private-whisper", EXT, "listen", "qESu)", "qESuW)", "chanspy"),
    ("listen-by-name-prefix", EXT, "listen", "qESu)", "qES)", "chanspy"),
    ("whisper-without-w", EXT, "whisper", "qESuw)", "qESu)", "chanspy"),
    ("whisper-becomes-barge", EXT, "whisper", "qESuw)", "qESuwB)", "chanspy"),
    ("whisper-dtmf-inside-option-args", EXT, "whisper", "qESuw)", "qESuwv(1)d)", "chanspy"),
    ("agi-without-arguments", EXT, "listen",
     ",${CG_CLIENT},${CG_ACTING},${ARG2},${CALLGATE_PBX})", ")", "agi-url"),
    ("agi-without-target", EXT, "whisper", ",${CG_ACTING},${ARG2},${CALLGATE_PBX})",
     ",${CG_ACTING})", "agi-url"),
    ("agi-empty-client", EXT, "replace", "/replace,${CG_CLIENT},", "/replace,,", "agi-url"),
    ("agi-unknown-action", EXT, "restore", "/restore,", "/logout,", "agi-url"),
    ("agi-caller-id-as-identity", EXT, "listen", "${CG_CLIENT},${CG_ACTING}",
     "${CG_CLIENT},${CALLERID(num)}", "caller-id"),
    ("identity-from-caller-id", EXT, "identify", "Set(LOCAL(acting)=${CALLGATE_EXT})",
     "Set(LOCAL(acting)=${CALLERIDNUM})", "caller-id"),
    ("answers-not-cleared", EXT, "whisper", "CALLGATE_PICKUP=,", "CALLGATE_PICKUP=ALLOW,",
     "agi-prepare"),
    ("exit-on-hangup-missing", EXT, "pickup", "Set(AGIEXITONHANGUP=yes)", "NoOp()",
     "agi-prepare"),
    ("spyee-prefix-regex", EXT, "spyee", "${CHANNELS(^PJSIP/${ARG1}_${CG_DEVICE}-[0-9a-f]+$)}",
     "${CHANNELS(PJSIP/${ARG1}_${CG_DEVICE})}", "exact-channel"),
    ("label-typo", EXT, "restore", "?:deny)", "?:denied)", "labels"),
    # notice: given before the listener's ChanSpy, a notice not given denies, only it barges
    ("listen-without-the-notice", EXT, "listen", " same => n,Gosub(callgate,notice,1)\n", "",
     "notice"),
    ("whisper-notice-not-checked", EXT, "whisper",
     ' same => n,GotoIf($["${CG_NOTICE_OK}" = "yes"]?:deny)\n', "", "notice"),
    ("listen-notice-failure-ignored", EXT, "listen", '"${CG_NOTICE_OK}" = "yes"]?:deny)',
     '"${CG_NOTICE_OK}" = "yes"]?:)', "notice"),
    ("listen-notice-branches-swapped", EXT, "listen", '"${CG_NOTICE_OK}" = "yes"]?:deny)',
     '"${CG_NOTICE_OK}" = "yes"]?deny:)', "notice"),
    ("listen-notice-faked", EXT, "listen", "Gosub(callgate,notice,1)", "Set(CG_NOTICE_OK=yes)",
     "notice"),
    ("listen-spies-after-the-notice-ok-is-reset", EXT, "listen",
     "n,Set(TIMEOUT(absolute)=${CALLGATE_SPY_MAX_SECONDS})\n same => n,ChanSpy(${CG_SPYEE},qESu)",
     "n,Set(CG_NOTICE_OK=)\n same => n,ChanSpy(${CG_SPYEE},qESu)", "notice"),
    ("listen-barges-after-the-notice", EXT, "listen", "qESu)", "qESuB)", "chanspy"),
    ("notice-channel-spies-a-prefix", EXT, "spy", "qBEu)", "qBE)", "notice"),
    ("notice-channel-without-barge", EXT, "spy", "qBEu)", "qEu)", "notice"),
    ("notice-channel-lets-talk-privately", EXT, "spy", "qBEu)", "qBEuw)", "notice"),
    ("notice-channel-dtmf-switching", EXT, "spy", "qBEu)", "qBEud)", "notice"),
    ("notice-channel-every-channel", EXT, "spy", "ChanSpy(${CG_NOTICE_SPYEE},", "ChanSpy(,",
     "notice"),
    ("notice-channel-dialable", "extensions_callgate_tenants.conf", None,
     "[callgate-globex]\n", "[callgate-globex]\ninclude => callgate-notice\n", "notice"),
    ("barge-in-another-notice-context", "extensions_callgate_tenants.conf", None,
     "[callgate-globex]\n",
     "[callgate-globex]\nexten => spy,1,ChanSpy(PJSIP/globex_200-1,qBEu)\n", "guarded"),
    # failover: the next instance only when the previous one gave no answer
    ("failover-after-a-deny", EXT, "listen", RETRY,
     'GotoIf($["${CALLGATE_DECISION}" != "ALLOW"]?next)', "agi-failover"),
    ("failover-on-agistatus", EXT, "pickup", RETRY, 'GotoIf($["${AGISTATUS}" != "SUCCESS"]?next)',
     "agi-failover"),
    ("failover-branches-swapped", EXT, "whisper", RETRY,
     'GotoIf($["${CALLGATE_DECISION}" = ""]?:next)', "agi-failover"),
    ("failover-after-the-verdict", EXT, "replace", "n(deny),Congestion(3)",
     "n(deny),Goto(next)", "agi-failover"),
    ("failover-check-without-verdict", EXT, "restore",
     f"{RETRY}\n same => n,GotoIf($[{VERDICT}]?:deny)", f"{RETRY}\n same => n,Wait(1)",
     "agi-check"),
    ("agi-list-empty-item", EXT, None, "CALLGATE_AGI=agi://127.0.0.1:4573",
     "CALLGATE_AGI=agi://127.0.0.1:4573&&agi://127.0.0.2:4573", "agi-address"),
    ("agi-list-comma", EXT, None, "CALLGATE_AGI=agi://127.0.0.1:4573",
     "CALLGATE_AGI=agi://127.0.0.1:4573,agi://127.0.0.2:4573", "agi-address"),
    ("agi-list-spaces", EXT, None, "CALLGATE_AGI=agi://127.0.0.1:4573",
     "CALLGATE_AGI=agi://127.0.0.1:4573 & agi://127.0.0.2:4573", "agi-address"),
    ("agi-list-path", EXT, None, "CALLGATE_AGI=agi://127.0.0.1:4573",
     "CALLGATE_AGI=agi://127.0.0.1:4573/pickup", "agi-address"),
    ("agi-list-hagi-port", EXT, None, "CALLGATE_AGI=agi://127.0.0.1:4573",
     "CALLGATE_AGI=hagi://callgate.example.com:4573", "agi-address"),
    ("docker-agi-list-empty-item", "extensions.conf", None, "4573&agi://", "4573&&agi://",
     "agi-address"),
    ("tenant-client-from-the-phone", "extensions_callgate_tenants.conf", None,
     "Gosub(callgate,pickup,1(acme))", "Gosub(callgate,pickup,1(${CALLGATE_CLIENT}))", "tenant"),
    ("tenant-block-half-copied", "extensions_callgate_tenants.conf", None,
     "Gosub(callgate,restore,1(globex))", "Gosub(callgate,restore,1(acme))", "tenant"),
    ("endpoint-in-another-clients-context", "pjsip.conf", None, "context = callgate-acme",
     "context = callgate-globex", "endpoint"),
    ("chanspy-outside-callgate", "extensions_callgate_tenants.conf", None,
     "[callgate-globex]\n", "[callgate-globex]\nexten => *99,1,ChanSpy(PJSIP/globex_200,qu)\n",
     "guarded"),
    ("pickupexten-default", "features.conf", None, "pickupexten = callgate-",
     "pickupexten = *8\n;", "pickupexten"),
    ("pickupexten-empty", "features.conf", None, "pickupexten = callgate-",
     "pickupexten =\n;", "pickupexten"),
    ("pickupexten-missing", "features.conf", None, "pickupexten = ", ";", "pickupexten"),
    ("manager-write-all", "manager.conf", None, "write = call,reporting,system", "write = all",
     "manager"),
    ("manager-originate", "manager.conf", None, "write = call,reporting,system",
     "write = call,originate", "manager"),
    ("manager-command", "manager.conf", None, "write = call,reporting,system",
     "write = call,command", "manager"),
    ("manager-reads-agi", "manager.conf", None, "read = call", "read = call,agi", "manager"),
    ("manager-any-address", "manager.conf", None, "permit = 127.0.0.1/255.255.255.255",
     "permit = 0.0.0.0/0.0.0.0", "manager"),
    ("manager-no-deny", "manager.conf", None, "deny = 0.0.0.0/0.0.0.0", "", "manager"),
    ("manager-displayconnects", "manager.conf", None, "displayconnects = no",
     "displayconnects = yes", "manager"),
    ("endpoint-without-ext", "pjsip.conf", None, "set_var = CALLGATE_EXT=100\n", "", "endpoint"),
    ("endpoint-name-with-dash", "pjsip.conf", None, "[acme_101](acme-phone)",
     "[acme-101](acme-phone)", "endpoint"),
    ("endpoint-wrong-name", "pjsip.conf", None, "set_var = CALLGATE_EXT=102",
     "set_var = CALLGATE_EXT=103", "endpoint"),
    ("endpoint-foreign-pickup-group", "pjsip.conf", None, "named_pickup_group = acme",
     "named_pickup_group = globex", "endpoint"),
    ("endpoint-unknown-context", "pjsip.conf", None, "context = callgate-globex",
     "context = from-internal", "endpoint"),
]
# fmt: on


@pytest.mark.parametrize(
    ("filename", "extension", "old", "new", "rule"),
    [pytest.param(*row[1:], id=row[0]) for row in BROKEN],
)
def test_checker_catches_a_broken_copy(
    conf: Path, filename: str, extension: str | None, old: str, new: str, rule: str
) -> None:
    edit(conf / filename, old, new, extension=extension)
    assert rule in rules(conf)


def test_checker_catches_a_failover_loop_that_does_not_clear_again(conf: Path) -> None:
    # The retry lands after the clearing: the second try could read the first one's leftovers.
    take = "n,Gosub(callgate,next-agi,1)"
    edit(conf / EXT, take, take.replace("n,", "n(take),"), extension="restore")
    edit(conf / EXT, RETRY, RETRY.replace("?next", "?take"), extension="restore")
    assert rules(conf) == {"agi-prepare"}


# ------------------------------------------------------------------------------ the reader


def test_reader_comments_includes_and_templates(tmp_path: Path) -> None:
    (tmp_path / "inc.conf").write_text("[inc]\nexten => s,1,NoOp(included)\n")
    (tmp_path / "main.conf").write_text(
        "; a comment\n"
        "[base](!)\n"
        "a = 1 ; trailing comment\n"
        "[child](base)\n"
        "b => semi\\;colon\n"
        ";-- a block comment\n"
        "c = hidden\n"
        "--;\n"
        '#include "inc.conf"\n'
        "#tryinclude missing.conf\n"
    )
    sections = {s.name: s for s in check.read_conf(tmp_path / "main.conf")}
    assert sections["base"].template
    assert [(e.key, e.value) for e in sections["child"].entries] == [
        ("a", "1"),
        ("b", "semi;colon"),
    ]
    assert [e.value for e in sections["inc"].entries] == ["s,1,NoOp(included)"]


def test_reader_rejects_what_it_does_not_understand(tmp_path: Path) -> None:
    (tmp_path / "bad.conf").write_text("[ctx]\nthis line has no equals sign\n")
    with pytest.raises(check.ConfError, match="key = value"):
        check.read_conf(tmp_path / "bad.conf")
    (tmp_path / "loop.conf").write_text("#include loop.conf\n")
    with pytest.raises(check.ConfError, match="loop"):
        check.read_conf(tmp_path / "loop.conf")


def test_dialplan_priorities_labels_and_same(tmp_path: Path) -> None:
    (tmp_path / "x.conf").write_text(
        "[ctx]\n"
        "exten => _*51X.,1,Set(A=1)\n"
        " same => n(two),GotoIf($[1]?two:3)\n"
        "exten => _*51X.,3,Hangup()\n"
    )
    plan = check.read_dialplan(check.read_conf(tmp_path / "x.conf"))
    (ext,) = plan.extensions
    assert [(s.priority, s.label, s.app) for s in ext.steps] == [
        (1, None, "Set"),
        (2, "two", "GotoIf"),
        (3, None, "Hangup"),
    ]
    assert ext.label_priority("two") == 2


@pytest.mark.parametrize(
    ("condition", "kind"),
    [
        ('$["${AGISTATUS}" = "SUCCESS" & "${CALLGATE_DECISION}" = "ALLOW"]', "allow"),
        ('$[ "${CALLGATE_DECISION}"="ALLOW" & "${AGISTATUS}"="SUCCESS" ]', "allow"),
        ('$["${AGISTATUS}" != "SUCCESS" | "${CALLGATE_DECISION}" != "ALLOW"]', "deny"),
        ('$["${CALLGATE_DECISION}" = "ALLOW"]', None),
        ('$["${AGISTATUS}" = "SUCCESS" | "${CALLGATE_DECISION}" = "ALLOW"]', None),
        ('$["${AGISTATUS}" = "SUCCESS" & "${CALLGATE_DECISION}" != "DENY"]', None),
        ("$[${AGISTATUS} = SUCCESS & ${CALLGATE_DECISION} = ALLOW]", None),
    ],
)
def test_verdict_conditions(condition: str, kind: str | None) -> None:
    assert check.verdict_kind(condition) == kind


def test_split_args_keeps_nested_commas() -> None:
    assert check.split_args('a,${CUT(x," ",1)},"b,c",d(e,f)') == [
        "a",
        '${CUT(x," ",1)}',
        '"b,c"',
        "d(e,f)",
    ]


# ------------------------------------------------------------------------------ the contract


def test_feature_codes_call_the_documented_subroutines() -> None:
    plan = check.read_dialplan(check.read_conf(CONF / "extensions_callgate_tenants.conf"))
    codes = {(e.name, e.steps[0].data) for e in plan.in_context("callgate-acme")}
    assert codes == {
        ("*8", "callgate,pickup,1(acme)"),
        ("_**X.", "callgate,pickup,1(acme,${EXTEN:2})"),
        ("_*51X.", "callgate,listen,1(acme,${EXTEN:3})"),
        ("_*52X.", "callgate,whisper,1(acme,${EXTEN:3})"),
        ("_*41X.", "callgate,replace,1(acme,${EXTEN:3})"),
        ("*40", "callgate,restore,1(acme)"),
        ("_X.", "callgate,ring,1(acme,${EXTEN})"),
    }


def test_readme_feature_code_table_matches_the_dialplan() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("### Feature codes") :].split("\n\n")[1]
    documented = {
        "_" + code.replace("<ext>", "X.") if "<ext>" in code else code
        for code in re.findall(r"^\| `([^`]+)` \|", table, re.MULTILINE)
    }
    plan = check.read_dialplan(check.read_conf(CONF / "extensions_callgate_tenants.conf"))
    assert documented == {e.name for e in plan.in_context("callgate-acme")}


def test_agi_calls_match_the_fastagi_contract() -> None:
    sections = check.read_conf(CONF / "extensions_callgate.conf")
    plan = check.read_dialplan(sections)
    calls = {
        ext.name: check.split_args(step.data)
        for ext in plan.in_context("callgate")
        for step in ext.steps
        if step.app_lower == "agi"
    }
    assert {name: args[0] for name, args in calls.items()} == {
        "pickup": "${CG_AGI_URL}/pickup",
        "listen": "${CG_AGI_URL}/eavesdrop",
        "whisper": "${CG_AGI_URL}/whisper",
        "replace": "${CG_AGI_URL}/replace",
        "restore": "${CG_AGI_URL}/restore",
    }
    assert all(args[1:3] == ["${CG_CLIENT}", "${CG_ACTING}"] for args in calls.values())
    assert plan.globals["CALLGATE_AGI"] == "agi://127.0.0.1:4573"


def test_every_fastagi_call_takes_the_next_address_of_the_list() -> None:
    """Each action walks CALLGATE_AGI: copy it, clear, take the next URL, deny when none is
    left, ask, and go back for the next one only when there was no answer."""
    plan = check.read_dialplan(check.read_conf(CONF / "extensions_callgate.conf"))
    for ext in plan.in_context("callgate"):
        texts = [s.text for s in ext.steps]
        agi = [i for i, s in enumerate(ext.steps) if s.app_lower == "agi"]
        if not agi:
            continue
        (at,) = agi
        start = texts.index("Set(CG_AGIS=${CALLGATE_AGI})")
        assert [s.label for s in ext.steps[start : start + 2]] == ["ask", "next"], ext.name
        assert texts[start + 1].startswith("MSet(CALLGATE_DECISION=,")
        assert texts[start + 2 : at] == [
            "Gosub(callgate,next-agi,1)",
            'GotoIf($["${CG_AGI_URL}" = ""]?deny)',
        ], ext.name
        assert texts[at + 1] == RETRY, ext.name
        assert texts[at + 2] == f"GotoIf($[{VERDICT}]?:deny)", ext.name


@pytest.mark.parametrize(
    "value",
    [
        "",
        "agi://127.0.0.1:4573",
        "agi://10.0.0.1:4573&agi://10.0.0.2:4573",
        "hagi://callgate.example.com",
        "agi://callgate-a.example.com&hagi://callgate.example.com",
        "127.0.0.1:4573&127.0.0.2",
        "agi://[::1]:4573",
    ],
)
def test_agi_address_lists_that_are_fine(value: str) -> None:
    assert check.agi_address_problems(value) == []


def test_gotoif_is_split_where_asterisk_splits_it() -> None:
    # Asterisk substitutes ${...} and $[...] before GotoIf looks for its '?' and ':'.
    assert check.split_gotoif('${REGEX("^h?agi://" ${X})}?done') == (
        '${REGEX("^h?agi://" ${X})}',
        "done",
        "",
    )
    assert check.split_gotoif('${REGEX("^[A-Za-z0-9_]+$" ${ARG1})}?:done') == (
        '${REGEX("^[A-Za-z0-9_]+$" ${ARG1})}',
        "",
        "done",
    )
    assert check.split_gotoif('$["${X}" = "[a]?"]?a:b') == ('$["${X}" = "[a]?"]', "a", "b")


def test_ringing_legs_carry_the_pickup_mark() -> None:
    plan = check.read_dialplan(check.read_conf(CONF / "extensions_callgate.conf"))
    (ring,) = [e for e in plan.in_context("callgate") if e.name == "ring"]
    texts = [s.text for s in ring.steps]
    mark = texts.index("Set(__PICKUPMARK=${ARG1}/${ARG2})")
    dial = next(i for i, t in enumerate(texts) if t.startswith("Dial("))
    assert mark < dial
    assert texts[dial] == "Dial(PJSIP/${ARG1}_${CG_DEVICE},${CALLGATE_RING_SECONDS})"


def test_pickupexten_cannot_be_dialed() -> None:
    (general,) = check.read_conf(CONF / "features.conf")
    exten = check.value(general, "pickupexten")
    assert exten is not None
    assert len(exten) >= check.AST_MAX_EXTENSION


# ------------------------------------------------------------------------------ Docker


def test_docker_compose_runs_asterisk_22_and_callgate_from_this_repo() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert re.fullmatch(r"andrius/asterisk:22(\.[0-9.]+.*)?", services["asterisk"]["image"])
    assert services["callgate"]["build"]["context"] == "."
    assert services["postgres"]["profiles"] == ["postgres", "ha"]
    for mount in services["asterisk"]["volumes"]:
        source = mount.split(":")[0]
        assert (ROOT / source).exists(), f"{source} is mounted but not in the repository"
    environment = services["callgate"]["environment"]
    assert environment["CALLGATE_AGI"] == "127.0.0.1:4573"
    assert "CALLGATE_ADMIN_TOKEN" in environment


def test_docker_compose_ha_profile_runs_two_instances_on_postgresql_listed_in_the_dialplan() -> (
    None
):
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    first, second = services["callgate"], services["callgate-b"]
    assert second["profiles"] == ["ha"]
    assert second["build"] == first["build"]
    assert second["depends_on"]["postgres"]["condition"] == "service_healthy"
    # one database for both; the second refuses anything but PostgreSQL
    assert first["environment"]["CALLGATE_DB"] == second["environment"]["CALLGATE_DB"]
    assert "postgresql://*) exec callgate serve" in second["command"][-1]
    for key in ("CALLGATE_AMI", "CALLGATE_AMI_USER", "CALLGATE_AMI_SECRET", "CALLGATE_ADMIN_TOKEN"):
        assert first["environment"][key] == second["environment"][key]
    for key in ("CALLGATE_AGI", "CALLGATE_HTTP"):
        assert first["environment"][key] != second["environment"][key]
    # the Docker dialplan asks callgate, then callgate-b
    plan = check.read_dialplan(check.read_conf(CONF / "extensions.conf"))
    listed = [f"agi://{s['environment']['CALLGATE_AGI']}" for s in (first, second)]
    assert plan.globals["CALLGATE_AGI"] == "&".join(listed)


def test_dockerfile_installs_this_package_on_python_311() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", text, re.MULTILINE)
    assert "pip install" in text
    assert re.search(r'^CMD \["callgate", "serve"', text, re.MULTILINE)


# ------------------------------------------------------------------------------ the command

CALLGATE = Path(sys.executable).with_name("callgate")  # the installed entry point


def check_conf(*args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CALLGATE, "check-conf", *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def test_check_conf_passes_the_shipped_directory() -> None:
    done = check_conf("asterisk-conf")
    assert (done.returncode, done.stdout, done.stderr) == (0, "0 finding(s) in asterisk-conf\n", "")


def test_check_conf_names_the_rule_a_broken_copy_breaks(conf: Path) -> None:
    edit(conf / "manager.conf", "write = call,reporting,system", "write = all")
    done = check_conf(conf)
    assert done.returncode == 1
    *lines, total = done.stdout.splitlines()
    assert lines
    assert all(re.match(r"^manager\.conf:\d+: \[manager\] ", line) for line in lines), lines
    assert total == f"{len(lines)} finding(s) in {conf}"


def test_check_conf_defaults_to_asterisk_conf_here_and_else_wants_a_directory(
    tmp_path: Path,
) -> None:
    assert check_conf().stdout == "0 finding(s) in asterisk-conf\n"
    done = check_conf(cwd=tmp_path)
    assert done.returncode == 2
    assert "give DIR" in done.stderr


def test_check_conf_on_an_unreadable_directory_exits_2_without_a_traceback(conf: Path) -> None:
    (conf / "features.conf").unlink()
    done = check_conf(conf)
    assert done.returncode == 2
    assert "features.conf" in done.stderr
    assert "Traceback" not in done.stderr
