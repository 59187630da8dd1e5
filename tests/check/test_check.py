#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""kite-check against the kernel it runs on, its documented JSON schema and fixtures.

    test_check.py probe  KITE_CHECK   # this kernel: the host, or inside UML
    test_check.py config KITE_CHECK   # kite-check config FILE on tests/check/fixtures

probe: every subcommand's --json output must validate against the schema in
tools/kite-check.md and agree with the human table and the exit status. On a
kernel without kTLS (this project's CI host) kite-check must say so and why:
CONFIG_TLS not set when the kernel's config is readable, no TLS ULP otherwise.
Where kTLS is required (KITE_REQUIRE_KTLS=1, set by tests/uml/uml-run) every
version x cipher x direction must be offloaded, and inside UML the rows
kite-check marks offloadable must match the kTLS contexts the kernel counted
in /proc/net/tls_stat during that run.

config: each fixture names the options it lacks in a "# expect-missing:" line;
kite-check config must list exactly those, and fail cleanly on bad input.

Exit 0 pass, 1 fail, 77 skip (standalone test program; Python stdlib only).
"""
import json
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
FAILURES = []


def fail(msg):
    FAILURES.append(msg)
    print("FAIL:", msg)


def check(cond, msg):
    if not cond:
        fail(msg)
    return cond


# ---- The schema, taken from the documentation so the two cannot drift ------

def documented_schema():
    with open(os.path.join(ROOT, "tools", "kite-check.md"), encoding="utf-8") as f:
        doc = f.read()
    section = doc.split("## JSON schema", 1)[1]
    block = re.search(r"```json\n(.*?)```", section, re.S)
    return json.loads(block.group(1))


TYPES = {"object": dict, "array": list, "string": str, "null": type(None), "boolean": bool}


def type_ok(value, name):
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, TYPES[name])


def validate(value, schema, path="$"):
    """Errors of value against a JSON Schema subset: type, enum, required,
    properties, additionalProperties (false), items, pattern, minLength."""
    errors = []
    if "type" in schema:
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(type_ok(value, n) for n in names):
            return [f"{path}: {value!r} is not of type {schema['type']}"]
    if "enum" in schema and not any(value == e and type(value) is type(e) for e in schema["enum"]):
        errors.append(f"{path}: {value!r} not in {schema['enum']}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            errors.append(f"{path}: shorter than {schema['minLength']}")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{path}: {value!r} does not match {schema['pattern']}")
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                errors.append(f"{path}: missing {key}")
        props = schema.get("properties", {})
        for key, sub in value.items():
            if key in props:
                errors += validate(sub, props[key], f"{path}.{key}")
            elif schema.get("additionalProperties", True) is False:
                errors.append(f"{path}: unexpected key {key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += validate(item, schema["items"], f"{path}[{i}]")
    return errors


def self_test_validator(schema):
    """The validator must catch what it claims to, or passing means nothing."""
    good = {"schema": "kite-check/1", "version": "0", "command": "all",
            "system": {"release": "r", "machine": "m", "config_source": None},
            "exit": 0, "result": "ok", "error": None, "checks": [], "fixes": []}
    check(not validate(good, schema), f"validator rejects a good document: {validate(good, schema)}")
    bad = [dict(good, exit=3), dict(good, extra=1), dict(good, checks=[{"id": "x"}]),
           {k: v for k, v in good.items() if k != "fixes"}, dict(good, exit=True),
           dict(good, system=dict(good["system"], release=None))]
    for b in bad:
        check(validate(b, schema), f"validator accepts a bad document: {b}")


# ---- Running kite-check ------------------------------------------------------

def run(tool, *args):
    p = subprocess.run([tool, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=300)
    return p.returncode, p.stdout, p.stderr


def run_json(tool, schema, *args):
    """kite-check --json ARGS: the document, validated, and its exit status."""
    rc, out, err = run(tool, "--json", *args)
    what = "kite-check --json " + " ".join(args)
    try:
        doc = json.loads(out)
    except ValueError as e:
        fail(f"{what}: not JSON ({e}); stderr: {err}")
        return None
    for e in validate(doc, schema):
        fail(f"{what}: schema: {e}")
    check(doc.get("exit") == rc, f"{what}: exit {rc} but the document says {doc.get('exit')}")
    check({0: "ok", 1: "fallback", 2: "error"}.get(rc) == doc.get("result"),
          f"{what}: result {doc.get('result')} for exit {rc}")
    checks = doc.get("checks", [])
    ids = [c["id"] for c in checks]
    check(len(ids) == len(set(ids)), f"{what}: duplicate ids")
    fixes = []
    for c in checks:
        check((c["fix"] is None) == (c["status"] == "ok"),
              f"{what}: {c['id']}: fix must be null exactly when ok: {c}")
        if c["status"] != "ok" and c["fix"] not in fixes:
            fixes.append(c["fix"])
    check(fixes == doc.get("fixes"), f"{what}: fixes {doc.get('fixes')} != {fixes}")
    falls = any(c["status"] == "missing" and c["level"] != "limit" for c in checks)
    if rc != 2:
        check(rc == (1 if falls else 0), f"{what}: exit {rc}, but missing fallback/slow: {falls}")
    return doc


def by_id(doc):
    return {c["id"]: c for c in doc["checks"]}


# ---- probe -----------------------------------------------------------------------

VERSIONS = ["tls12", "tls13"]
CIPHERS = ["aes-128-gcm", "aes-256-gcm", "chacha20-poly1305", "aes-128-ccm"]


def kernel_at_least(major, minor):
    m = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return m and (int(m.group(1)), int(m.group(2))) >= (major, minor)


def ulp_listed():
    try:
        with open("/proc/sys/net/ipv4/tcp_available_ulp") as f:
            return "tls" in f.read().split()
    except OSError:
        return False


def tls_stat():
    with open("/proc/net/tls_stat") as f:
        return {k: int(v) for k, v in (line.split() for line in f if line.strip())}


def probe_matches_kernel(tool, schema):
    """What kite-check offload --json reports against what the kernel did in
    the same run: its probe installs one kTLS context per direction it calls
    offloadable, so /proc/net/tls_stat's TlsTxSw and TlsRxSw must grow by
    exactly the number of tx and rx rows marked ok (nothing else in a UML
    boot installs kTLS meanwhile; on a shared host another process might)."""
    if os.environ.get("KITE_IN_UML") != "1":
        return
    before = tls_stat()
    doc = run_json(tool, schema, "offload")
    after = tls_stat()
    if not doc:
        return
    rows = [c for c in doc["checks"] if re.match(r"offload\.tls1[23]\.", c["id"])]
    for d, stat in (("tx", "TlsTxSw"), ("rx", "TlsRxSw")):
        ok = sum(1 for c in rows if c["id"].endswith("." + d) and c["status"] == "ok")
        grew = after.get(stat, 0) - before.get(stat, 0)
        print(f"kite-check offload: {ok} {d} rows ok, {stat} grew by {grew}")
        check(grew == ok, f"kite-check says {ok} {d} combinations offload, but the kernel "
              f"installed {grew} ({stat})")
    check(after.get("TlsDecryptError", 0) == before.get("TlsDecryptError", 0),
          "kite-check's probe caused a decryption error")


def probe(tool, schema):
    require = os.environ.get("KITE_REQUIRE_KTLS") == "1"
    where = "inside UML" if os.environ.get("KITE_IN_UML") == "1" else "on this host"
    doc = run_json(tool, schema)
    if not doc:
        return
    checks = by_id(doc)
    check(doc["command"] == "all", "command is not 'all'")
    check({c["section"] for c in doc["checks"]} == {"kernel", "offload", "uring"},
          "kite-check without a command must cover kernel, offload and uring")
    for sub in ("kernel", "offload", "uring"):
        part = run_json(tool, schema, sub)
        if part:
            check(part["command"] == sub, f"{sub}: command {part['command']}")
            check({c["section"] for c in part["checks"]} == {sub}, f"{sub}: foreign sections")
            check([c for c in doc["checks"] if c["section"] == sub] == part["checks"],
                  f"{sub}: differs from the same section of kite-check")

    # The human table: same exit, every check named, every fix listed.
    rc, out, _ = run(tool)
    check(rc == doc["exit"], f"human output exits {rc}, JSON says {doc['exit']}")
    for c in doc["checks"]:
        check(c["name"] in out, f"human output lacks {c['name']}")
    for i, fix in enumerate(doc["fixes"], 1):
        check(f"[{i}] {fix}" in out, f"human output lacks fix [{i}] {fix}")
    check(re.search(r"^result: .*\(exit %d\)$" % rc, out, re.M), "human output lacks result line")

    combos = [f"offload.{v}.{c}.{d}" for v in VERSIONS for c in CIPHERS for d in ("tx", "rx")]
    check(all(k in checks for k in combos), "offload lacks a version x cipher x direction")
    ulp = checks["offload.ulp"]
    print(f"{where}: TCP_ULP tls {ulp['status']}: {ulp['detail']}")
    if ulp["status"] == "ok":
        missing = [k for k in combos if checks[k]["status"] != "ok"]
        for k in missing:
            print(f"  {k}: {checks[k]['detail']}")
        if require:
            check(not missing, f"kTLS required {where}, but not offloaded: {missing}")
        check(ulp_listed(), "probe has the ULP but tcp_available_ulp lacks tls")
        check(checks["kernel.ulp"]["status"] == "ok", "kernel.ulp disagrees with the probe")
        check(checks["kernel.tls_stat"]["status"] == "ok", "tls_stat absent with kTLS")
        rekey = checks["offload.rekey"]
        if kernel_at_least(6, 14):
            check(rekey["status"] == "ok", f"Linux >= 6.14 should rekey: {rekey['detail']}")
        else:
            check(rekey["status"] == "missing" and "6.14" in rekey["fix"],
                  f"rekey on Linux < 6.14: {rekey}")
        if kernel_at_least(6, 0):
            check(checks["offload.rx_no_pad"]["status"] == "ok", "no-pad RX missing on >= 6.0")
        zc = checks["offload.tx_zerocopy_ro"]
        if kernel_at_least(5, 19):
            check(zc["status"] == "ok", f"TX zerocopy-ro missing on >= 5.19: {zc['detail']}")
        else:
            check(zc["status"] == "missing" and "5.19" in zc["fix"], f"zerocopy-ro: {zc}")
        probe_matches_kernel(tool, schema)
        config = checks["kernel.config"]
        if config["status"] == "ok":
            # A config we can read (the self-built UML kernel has
            # /proc/config.gz): every option of the fragments must be there.
            for c in doc["checks"]:
                if c["id"].startswith("kernel.CONFIG_") and c["level"] != "limit":
                    check(c["status"] == "ok", f"{c['id']}: {c['detail']}")
        return

    # No kTLS: unavailable, everywhere, with the reason.
    check(not require, f"kTLS required {where} but unavailable: {ulp['detail']}")
    check(doc["exit"] == 1, f"exit {doc['exit']} without kTLS")
    check(not ulp_listed(), "tcp_available_ulp lists tls but the probe failed")
    check(all(checks[k]["status"] == "missing" for k in combos), "offloadable without the ULP")
    for k in ("kernel.ulp", "kernel.tls_stat"):
        check(checks[k]["status"] == "missing", f"{k} is {checks[k]['status']} without kTLS")
    check("no TLS ULP" in ulp["detail"], f"reason does not say the TLS ULP is missing: {ulp}")
    config = checks["kernel.config"]
    tls = checks.get("kernel.CONFIG_TLS")
    print(f"kernel config: {config['status']} ({config['detail']}); CONFIG_TLS: "
          f"{tls['value'] if tls else 'not checked'}")
    if config["status"] == "ok" and tls and tls["value"] == "not set":
        want = "CONFIG_TLS not set: rebuild with kernel-config/ktls.config"
        check(tls["status"] == "missing" and tls["fix"] == want, f"kernel.CONFIG_TLS: {tls}")
        check(ulp["fix"] == want, f"the ULP's fix should be '{want}': {ulp['fix']}")
        check(doc["fixes"][0] == want, f"first fix should be '{want}': {doc['fixes']}")
    elif config["status"] == "ok" and tls:
        print("CONFIG_TLS is", tls["value"], "- the fix must load it:", ulp["fix"])
        check("modprobe tls" in ulp["fix"], f"CONFIG_TLS={tls['value']} but fix {ulp['fix']}")
    else:
        no_config_fix(ulp, config)
    if config["status"] == "ok" and os.environ.get("KITE_IN_UML") != "1":
        probe_hidden_config(tool, schema)


def no_config_fix(ulp, config):
    """Without a config the reason is still the missing TLS ULP, and the fix
    leads to kernel-config/ktls.config (after modprobe tls where a module
    could exist)."""
    check(config["status"] == "unknown", f"kernel.config: {config}")
    check("no TLS ULP" in ulp["detail"], f"reason: {ulp['detail']}")
    check("ktls.config" in ulp["fix"] and "CONFIG_TLS" in ulp["fix"], f"fix: {ulp['fix']}")
    modules = os.path.exists("/proc/modules")
    check(("modprobe tls" in ulp["fix"]) == modules,
          f"modprobe tls is {'' if modules else 'not '}a fix here: {ulp['fix']}")


def probe_hidden_config(tool, schema):
    """The same kernel with its config out of sight (a private mount
    namespace, root only): the reason must still be the missing TLS ULP."""
    release = os.uname().release
    script = ('for f in /proc/config.gz /boot/config-%s; do [ -e "$f" ] || continue; '
              'mount --bind /dev/null "$f" || exit 77; done; exec "$0" --json "$@"' % release)
    p = subprocess.run(["unshare", "-m", "sh", "-c", script, tool],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
    if p.returncode not in (0, 1) or not p.stdout.startswith("{"):
        # Not root, or no mount namespaces: unshare or mount failed.
        print(f"note: cannot hide the kernel config here (unshare/mount: {p.returncode} "
              f"{p.stderr.strip()}); that case is covered where no config exists")
        return
    doc = json.loads(p.stdout)
    for e in validate(doc, schema):
        fail(f"hidden config: schema: {e}")
    checks = by_id(doc)
    check(doc["system"]["config_source"] is None, f"hidden config still read: {doc['system']}")
    print(f"config hidden: fix: {checks['offload.ulp']['fix']}")
    no_config_fix(checks["offload.ulp"], checks["kernel.config"])
    check(not [k for k in checks if k.startswith("kernel.CONFIG_")], "options checked without a config")


# ---- config FILE -----------------------------------------------------------------

def expected_missing(path):
    with open(path) as f:
        for line in f:
            if line.startswith("# expect-missing:"):
                return set(line.split(":", 1)[1].split())
    raise SystemExit(f"{path}: no '# expect-missing:' line")


def config(tool, schema):
    fixtures = os.path.join(HERE, "fixtures")
    names = sorted(n for n in os.listdir(fixtures) if n.endswith(".config"))
    check(len(names) >= 3, f"fixtures: {names}")
    for name in names:
        path = os.path.join(fixtures, name)
        want = expected_missing(path)
        doc = run_json(tool, schema, "config", path)
        if not doc:
            continue
        missing = {c["name"] for c in doc["checks"] if c["status"] == "missing"}
        print(f"{name}: missing {sorted(missing)}, exit {doc['exit']}")
        check(missing == want, f"{name}: missing {sorted(missing)}, expected {sorted(want)}")
        check(doc["system"]["config_source"] == path, f"{name}: config_source")
        check(all(c["section"] == "config" and c["id"] == "config." + c["name"]
                  for c in doc["checks"]), f"{name}: ids")
        for c in doc["checks"]:
            if c["status"] == "missing":
                frag = re.search(r"rebuild with kernel-config/(\w+\.config)$", c["fix"] or "")
                check(frag and c["fix"].startswith(c["name"] + " "),
                      f"{name}: {c['name']}: fix {c['fix']}")
        # Only the file's architecture: no arm64 options in an x86_64 check,
        # no host accelerators in a UML one.
        for c in doc["checks"]:
            n = c["name"]
            if not name.startswith("arm64"):
                check("ARM64" not in n and "NEON" not in n, f"{name}: {n} checked")
            if not name.startswith("x86_64"):
                check("X86_64" not in n and "AES_NI" not in n, f"{name}: {n} checked")
            check(name.startswith("um") or n not in ("CONFIG_HOSTFS", "CONFIG_UML_RANDOM"),
                  f"{name}: {n} checked")
        rc, out, _ = run(tool, "config", path)
        check(rc == doc["exit"], f"{name}: human exit {rc} != {doc['exit']}")
        for m in want:
            check(f"{m} not set" in out or f"{m}=" in out, f"{name}: human output lacks {m}")
        # The compiled-in fragments are the files in kernel-config/.
        frags = ["ktls", "io_uring"] + (["uml"] if name.startswith("um") else [])
        args = [a for f in frags for a in ("--fragment", os.path.join(ROOT, "kernel-config", f + ".config"))]
        disk = run_json(tool, schema, "config", path, *args)
        if disk:
            strip = lambda d: [(c["id"], c["status"], c["level"]) for c in d["checks"]]
            check(strip(disk) == strip(doc), f"{name}: compiled-in fragments differ from kernel-config/")

    with tempfile.TemporaryDirectory() as tmp:
        # Value rules: m satisfies y, absent satisfies "is not set", others exact.
        frag = os.path.join(tmp, "rules.config")
        with open(frag, "w") as f:
            f.write("#@ slow: test\nCONFIG_A=y\nCONFIG_B=y\n# CONFIG_C is not set\n"
                    "CONFIG_D=5\nCONFIG_E=\"x\"\n\nCONFIG_F=y\n")
        cfg = os.path.join(tmp, "rules.cfg")
        with open(cfg, "w") as f:
            f.write("CONFIG_A=m\n# CONFIG_B is not set\nCONFIG_D=6\nCONFIG_E=\"x\"\n")
        doc = run_json(tool, schema, "config", cfg, "--fragment", frag)
        if doc:
            got = {c["name"]: (c["status"], c["level"]) for c in doc["checks"]}
            check(got == {"CONFIG_A": ("ok", "slow"), "CONFIG_B": ("missing", "slow"),
                          "CONFIG_C": ("ok", "slow"), "CONFIG_D": ("missing", "slow"),
                          "CONFIG_E": ("ok", "slow"), "CONFIG_F": ("missing", "fallback")},
                  f"value rules: {got}")
            d = by_id(doc)["config.CONFIG_D"]["fix"]
            check(d == f"CONFIG_D=6, kite needs 5: rebuild with {frag}", f"fix for a value: {d}")
        # Errors: exit 2 with a JSON document that says why.
        bad = os.path.join(tmp, "bad.config")
        with open(bad, "w") as f:
            f.write("CONFIG_A=y\nthis is not a config line\n")
        empty = os.path.join(tmp, "empty.config")
        open(empty, "w").close()
        for args in (["config", os.path.join(tmp, "absent.config")],
                     ["config", cfg, "--fragment", "nosuch"],
                     ["config", cfg, "--fragment", bad],
                     ["config", empty], ["config"], ["nosuch-command"], ["kernel", "extra"]):
            doc = run_json(tool, schema, *args)
            check(doc and doc["exit"] == 2 and doc["error"], f"{args}: expected an error: {doc}")
            rc, _, err = run(tool, *args)
            check(rc == 2 and err.startswith("kite-check: "), f"{args}: human: {rc} {err!r}")


def fragments_lint():
    """Comments must never name an option as a word: merge_config.sh greps
    fragments with grep -w and would take the comment for a value."""
    for name in ("ktls.config", "io_uring.config", "uml.config"):
        with open(os.path.join(ROOT, "kernel-config", name)) as f:
            for n, line in enumerate(f, 1):
                if line.startswith("#") and re.search(r"\bCONFIG_", line) and \
                        not re.fullmatch(r"# CONFIG_\w+ is not set\n?", line):
                    fail(f"kernel-config/{name}:{n}: comment names an option: {line.strip()}")


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("probe", "config"):
        print(__doc__)
        return 2
    mode, tool = sys.argv[1], sys.argv[2]
    if not os.access(tool, os.X_OK):
        print(f"SKIP: {tool} is not an executable kite-check")
        return 77
    schema = documented_schema()
    self_test_validator(schema)
    if mode == "probe":
        probe(tool, schema)
    else:
        fragments_lint()
        config(tool, schema)
    if FAILURES:
        print(f"{len(FAILURES)} failure(s)")
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
