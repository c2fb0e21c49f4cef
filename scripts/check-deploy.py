#!/usr/bin/env python3
"""Static checks of the docker compose observability stack (no Docker engine needed).

    scripts/check-deploy.py --exported FILE [--optional NAME]... [--sluice BIN]
    scripts/check-deploy.py --skip-metrics [--sluice BIN]

Checks, from the repository root:

* docker-compose.yml: YAML (no duplicate keys), interpolation (`${VAR:-default}`), a
  compose-spec subset written below as a JSON schema, and what the schema cannot say:
  every relative path of a bind mount, build context, Dockerfile, env_file, config or
  secret exists in the repository; named volumes are declared; depends_on names services
  (with a healthcheck where it waits for `service_healthy`); host ports do not collide.
  With `docker compose` (or a v2 `docker-compose`) on PATH, also `docker compose config`.
* Dockerfile: every COPY source exists in the build context and is not excluded by
  .dockerignore; the image's paths (binaries aside) are traced back to the repository.
  With `hadolint` on PATH, also hadolint.
* The Sluice policy the compose file runs (`--policy`): listeners off loopback, the
  admin token variable set in the service's environment, pool peers naming compose
  services, every filter module present in the image (or built by filters/build.sh).
  With `--sluice BIN`, also `BIN check` on it (paths and peers mapped to this machine).
* Prometheus: prometheus.yml parses and scrapes Sluice's admin port (the compose
  service and the policy's admin port) on /metrics with the bearer token; with
  `promtool` on PATH, also `promtool check config --syntax-only`.
* Grafana: every provisioning file parses; datasources point at compose services;
  dashboard providers load the repository's dashboards. Every dashboard: layout, panel
  ids, datasource uids, and every PromQL expression: syntax (`promtool check rules`
  when promtool is on PATH), histogram_quantile over `_bucket` by `le`, and every
  `sluice_*` metric name exported by Sluice, as listed by `--exported FILE`.

`--exported FILE`: the metric families Sluice exports, one name per line (blank lines
and `#` comments ignored). A raw scrape of /metrics works too: `# TYPE` lines give the
names and types, sample lines their names. Histogram series (`_bucket`, `_sum`,
`_count`) match their family. `--optional NAME` (repeatable): a name the dashboard may
use although the scrape lacks it (a filter-defined `sluice_wasm_*` metric of a filter the
scraped policy does not load); reported, not an error.

Exits 1 on any error (each printed as `error: WHERE: WHAT`), 2 on bad usage. Needs
Python 3.11+ with PyYAML and jsonschema; when they are missing it installs them with pip
into target/check-deploy-pythonX.Y (a --target directory: no system site-packages touched).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parent.parent
PYDEPS = ROOT / "target" / f"check-deploy-python{sys.version_info[0]}.{sys.version_info[1]}"


# ------------------------------------------------------------------------------------
# dependencies


def ensure_deps():
    """Import PyYAML and jsonschema, installing them with pip (--target) if missing."""

    def missing():
        out = []
        for mod, pkg in (("yaml", "pyyaml"), ("jsonschema", "jsonschema")):
            try:
                importlib.import_module(mod)
            except ImportError:
                out.append(pkg)
        return out

    need = missing()
    if need and PYDEPS.is_dir():
        sys.path.insert(0, str(PYDEPS))
        importlib.invalidate_caches()
        need = missing()
    if need:
        print(f"check-deploy: installing {' '.join(need)} with pip into {PYDEPS.relative_to(ROOT)}", flush=True)
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
               "--target", str(PYDEPS), *need]
        r = subprocess.run(cmd, env={**os.environ, "PIP_ROOT_USER_ACTION": "ignore"})
        if r.returncode != 0:
            sys.exit("check-deploy: error: could not install " + " ".join(need) + " (`" + " ".join(cmd) + "` failed); "
                     "install them yourself: `pip install pyyaml jsonschema` or "
                     "`apt-get install python3-yaml python3-jsonschema`")
        if str(PYDEPS) not in sys.path:
            sys.path.insert(0, str(PYDEPS))
        importlib.invalidate_caches()
        need = missing()
        if need:
            sys.exit(f"check-deploy: error: {' '.join(need)} still cannot be imported after pip install")


ensure_deps()
import jsonschema  # noqa: E402
import yaml  # noqa: E402

try:
    import tomllib  # Python 3.11+
except ImportError:  # pragma: no cover
    try:
        import tomli as tomllib  # type: ignore
    except ImportError:
        tomllib = None  # type: ignore


# ------------------------------------------------------------------------------------
# reporting


class Report:
    def __init__(self):
        self.errors = 0
        self.warnings = 0

    def section(self, title):
        print(f"== {title}")

    def error(self, where, msg):
        self.errors += 1
        print(f"error: {where}: {msg}")

    def warn(self, where, msg):
        self.warnings += 1
        print(f"warning: {where}: {msg}")

    def ok(self, msg):
        print(f"ok: {msg}")

    def note(self, msg):
        print(f"note: {msg}")


R = Report()


def rel(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(ROOT))
    except ValueError:
        return str(p)


def inside_repo(p: Path) -> bool:
    try:
        p.resolve().relative_to(ROOT)
        return True
    except ValueError:
        return False


def which_tool(name):
    return shutil.which(name)


def run_tool(cmd, cwd=ROOT, env=None, timeout=300):
    try:
        r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return 127, str(e)
    return r.returncode, (r.stdout + r.stderr).strip()


# ------------------------------------------------------------------------------------
# YAML without duplicate keys


class StrictLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader, node, deep=False):
    seen = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            continue
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark,
                f"duplicate key {key!r} (first at line {seen[key] + 1})", key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(path: Path):
    """The document, or None after reporting an error."""
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.load(f, Loader=StrictLoader)
    except FileNotFoundError:
        R.error(rel(path), "missing")
    except yaml.YAMLError as e:
        R.error(rel(path), "not valid YAML: " + " ".join(str(e).split()))
    except UnicodeDecodeError as e:
        R.error(rel(path), f"not UTF-8: {e}")
    return None


# ------------------------------------------------------------------------------------
# compose: interpolation


VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class InterpolationError(Exception):
    pass


def interpolate(s: str, env: dict, unset: set) -> str:
    """Compose's `$VAR`, `${VAR}`, `${VAR:-d}`, `${VAR-d}`, `${VAR:?e}`, `${VAR?e}`,
    `${VAR:+r}`, `${VAR+r}` and `$$`, with nesting in the default/replacement part."""
    out = []
    i = 0
    while i < len(s):
        c = s[i]
        if c != "$":
            out.append(c)
            i += 1
            continue
        if i + 1 < len(s) and s[i + 1] == "$":
            out.append("$")
            i += 2
            continue
        if i + 1 < len(s) and s[i + 1] == "{":
            depth, j = 1, i + 2
            while j < len(s) and depth:
                if s[j] == "{":
                    depth += 1
                elif s[j] == "}":
                    depth -= 1
                j += 1
            if depth:
                raise InterpolationError(f"unterminated ${{ in {s!r}")
            body = s[i + 2:j - 1]
            m = VAR_NAME.match(body)
            if not m:
                raise InterpolationError(f"invalid variable name in ${{{body}}}")
            name, rest = m.group(0), body[m.end():]
            val = env.get(name)
            if rest == "":
                if val is None:
                    unset.add(name)
                out.append(val or "")
            else:
                op = next((o for o in (":-", ":?", ":+", "-", "?", "+") if rest.startswith(o)), None)
                if op is None:
                    raise InterpolationError(f"invalid interpolation ${{{body}}}")
                arg = interpolate(rest[len(op):], env, unset)
                empty = val is None or (op.startswith(":") and val == "")
                if op in (":-", "-"):
                    out.append(arg if empty else val)
                elif op in (":?", "?"):
                    if empty:
                        raise InterpolationError(f"required variable {name} is missing: {arg}")
                    out.append(val)
                else:
                    out.append("" if empty else arg)
            i = j
            continue
        m = VAR_NAME.match(s, i + 1)
        if not m:
            raise InterpolationError(f"invalid interpolation at {s[i:i + 10]!r} in {s!r} (write $$ for a literal $)")
        name = m.group(0)
        val = env.get(name)
        if val is None:
            unset.add(name)
        out.append(val or "")
        i = m.end()
    return "".join(out)


def interpolate_tree(node, env, unset, path, errors):
    if isinstance(node, dict):
        return {k: interpolate_tree(v, env, unset, f"{path}.{k}" if path else str(k), errors) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(v, env, unset, f"{path}[{i}]", errors) for i, v in enumerate(node)]
    if isinstance(node, str):
        try:
            return interpolate(node, env, unset)
        except InterpolationError as e:
            errors.append((path, str(e)))
            return node
    return node


def dotenv(path: Path) -> dict:
    env = {}
    if not path.is_file():
        return env
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        k, v = line.split("=", 1)
        k = k.strip().removeprefix("export ").strip()
        v = v.strip()
        if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"":
            v = v[1:-1]
        env[k] = v
    return env


# ------------------------------------------------------------------------------------
# compose: the schema (a subset of the compose specification)


DURATION = {"type": "string", "pattern": r"^(\d+(\.\d+)?(ns|us|ms|s|m|h))+$"}
STR_OR_LIST = {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
CMD = {"oneOf": [{"type": "null"}, {"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
LIST_OR_DICT = {
    "oneOf": [
        {"type": "object", "patternProperties": {r"^.+$": {"type": ["string", "number", "boolean", "null"]}},
         "additionalProperties": False},
        {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
    ]
}
ENVIRONMENT = {
    "oneOf": [
        {"type": "object",
         "patternProperties": {r"^[A-Za-z_][A-Za-z0-9_.-]*$": {"type": ["string", "number", "boolean", "null"]}},
         "additionalProperties": False},
        {"type": "array", "items": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_.-]*(=.*)?$"},
         "uniqueItems": True},
    ]
}
PORT_RE = (r"^(?:(?:\d{1,3}(?:\.\d{1,3}){3}|\[[0-9A-Fa-f:]+\]):)?(?:(?:\d+(?:-\d+)?)?:)?"
           r"\d+(?:-\d+)?(?:/(?:tcp|udp|sctp))?$")
PORT = {
    "oneOf": [
        {"type": "integer", "minimum": 1, "maximum": 65535},
        {"type": "string", "pattern": PORT_RE},
        {"type": "object", "required": ["target"], "additionalProperties": False,
         "properties": {"name": {"type": "string"}, "target": {"type": ["integer", "string"]},
                        "published": {"type": ["integer", "string"]}, "host_ip": {"type": "string"},
                        "protocol": {"enum": ["tcp", "udp", "sctp"]}, "mode": {"enum": ["host", "ingress"]},
                        "app_protocol": {"type": "string"}}},
    ]
}
VOLUME = {
    "oneOf": [
        {"type": "string", "pattern": r"^[^:]+(:[^:]+(:[a-z,]+)?)?$"},
        {"type": "object", "required": ["type", "target"], "additionalProperties": False,
         "properties": {
             "type": {"enum": ["bind", "volume", "tmpfs", "npipe", "cluster", "image"]},
             "source": {"type": "string"}, "target": {"type": "string"},
             "read_only": {"type": "boolean"}, "consistency": {"type": "string"},
             "bind": {"type": "object"}, "volume": {"type": "object"}, "tmpfs": {"type": "object"},
             "image": {"type": "object"}}},
    ]
}
HEALTHCHECK = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "test": {"oneOf": [{"type": "string"}, {"type": "array", "minItems": 1, "items": {"type": "string"},
                                                "prefixItems": [{"enum": ["NONE", "CMD", "CMD-SHELL"]}]}]},
        "interval": DURATION, "timeout": DURATION, "start_period": DURATION, "start_interval": DURATION,
        "retries": {"type": "integer", "minimum": 0}, "disable": {"type": "boolean"},
    },
}
DEPENDS_ON = {
    "oneOf": [
        {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
        {"type": "object", "additionalProperties": {
            "type": "object", "required": ["condition"], "additionalProperties": False,
            "properties": {"condition": {"enum": ["service_started", "service_healthy",
                                                  "service_completed_successfully"]},
                           "restart": {"type": "boolean"}, "required": {"type": "boolean"}}}},
    ]
}
BUILD = {
    "oneOf": [
        {"type": "string"},
        {"type": "object", "additionalProperties": False, "patternProperties": {"^x-": {}},
         "properties": {"context": {"type": "string"}, "dockerfile": {"type": "string"},
                        "args": LIST_OR_DICT, "target": {"type": "string"}, "labels": LIST_OR_DICT,
                        "cache_from": {"type": "array", "items": {"type": "string"}},
                        "cache_to": {"type": "array", "items": {"type": "string"}},
                        "platforms": {"type": "array", "items": {"type": "string"}},
                        "tags": {"type": "array", "items": {"type": "string"}},
                        "pull": {"type": "boolean"}, "no_cache": {"type": "boolean"},
                        "network": {"type": "string"}, "shm_size": {"type": ["string", "integer"]},
                        "additional_contexts": LIST_OR_DICT, "secrets": {"type": "array"},
                        "ssh": {"type": ["array", "object"]}}},
    ]
}
FILE_REF = {"oneOf": [{"type": "string"}, {"type": "object", "required": ["source"],
                                            "properties": {"source": {"type": "string"},
                                                           "target": {"type": "string"},
                                                           "uid": {"type": "string"}, "gid": {"type": "string"},
                                                           "mode": {"type": ["integer", "string"]}},
                                            "additionalProperties": False}]}
SERVICE = {
    "type": "object",
    "additionalProperties": False,
    "patternProperties": {"^x-": {}},
    "anyOf": [{"required": ["image"]}, {"required": ["build"]}],
    "properties": {
        "image": {"type": "string", "minLength": 1},
        "build": BUILD,
        "command": CMD,
        "entrypoint": CMD,
        "environment": ENVIRONMENT,
        "env_file": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"oneOf": [
            {"type": "string"}, {"type": "object", "required": ["path"],
                                 "properties": {"path": {"type": "string"}, "required": {"type": "boolean"},
                                                "format": {"type": "string"}},
                                 "additionalProperties": False}]}}]},
        "ports": {"type": "array", "items": PORT},
        "expose": {"type": "array", "items": {"type": ["string", "integer"]}},
        "volumes": {"type": "array", "items": VOLUME},
        "depends_on": DEPENDS_ON,
        "healthcheck": HEALTHCHECK,
        "restart": {"type": "string", "pattern": r"^(no|always|unless-stopped|on-failure(:\d+)?)$"},
        "init": {"type": "boolean"},
        "user": {"type": "string"},
        "working_dir": {"type": "string"},
        "container_name": {"type": "string", "pattern": r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$"},
        "hostname": {"type": "string"},
        "labels": LIST_OR_DICT,
        "networks": {"oneOf": [{"type": "array", "items": {"type": "string"}},
                               {"type": "object", "additionalProperties": {"type": ["object", "null"]}}]},
        "network_mode": {"type": "string"},
        "profiles": {"type": "array", "items": {"type": "string"}},
        "pull_policy": {"enum": ["always", "never", "if_not_present", "build", "missing"]},
        "platform": {"type": "string"},
        "stop_grace_period": DURATION,
        "stop_signal": {"type": "string"},
        "read_only": {"type": "boolean"},
        "tmpfs": STR_OR_LIST,
        "cap_add": {"type": "array", "items": {"type": "string"}},
        "cap_drop": {"type": "array", "items": {"type": "string"}},
        "security_opt": {"type": "array", "items": {"type": "string"}},
        "extra_hosts": LIST_OR_DICT,
        "logging": {"type": "object", "properties": {"driver": {"type": "string"}, "options": {"type": "object"}},
                    "additionalProperties": False},
        "ulimits": {"type": "object"},
        "sysctls": LIST_OR_DICT,
        "shm_size": {"type": ["string", "integer"]},
        "mem_limit": {"type": ["string", "integer"]},
        "cpus": {"type": ["string", "number"]},
        "configs": {"type": "array", "items": FILE_REF},
        "secrets": {"type": "array", "items": FILE_REF},
        "deploy": {"type": "object"},
        "stdin_open": {"type": "boolean"},
        "tty": {"type": "boolean"},
    },
}
TOP_FILE = {"type": ["object", "null"], "additionalProperties": False, "patternProperties": {"^x-": {}},
            "properties": {"file": {"type": "string"}, "environment": {"type": "string"},
                           "content": {"type": "string"}, "external": {"type": "boolean"},
                           "name": {"type": "string"}}}
COMPOSE_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "required": ["services"],
    "additionalProperties": False,
    "patternProperties": {"^x-": {}},
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9_-]*$"},
        "services": {"type": "object", "minProperties": 1,
                     "patternProperties": {r"^[a-zA-Z0-9._-]+$": SERVICE}, "additionalProperties": False},
        "volumes": {"type": "object", "additionalProperties": {
            "type": ["object", "null"], "additionalProperties": False, "patternProperties": {"^x-": {}},
            "properties": {"driver": {"type": "string"}, "driver_opts": {"type": "object"},
                           "external": {"type": "boolean"}, "name": {"type": "string"},
                           "labels": LIST_OR_DICT}}},
        "networks": {"type": "object", "additionalProperties": {"type": ["object", "null"]}},
        "configs": {"type": "object", "additionalProperties": TOP_FILE},
        "secrets": {"type": "object", "additionalProperties": TOP_FILE},
    },
}


def schema_errors(doc, schema):
    v = jsonschema.Draft7Validator(schema)
    out = []
    for e in sorted(v.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path))):
        where = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in e.absolute_path).replace(".[", "[")
        msg = e.message
        if e.validator == "additionalProperties" and isinstance(e.instance, dict):
            known = set(e.schema.get("properties", {}))
            pats = [re.compile(p) for p in e.schema.get("patternProperties", {})]
            extra = sorted(k for k in e.instance if k not in known and not any(p.search(k) for p in pats))
            msg = "unknown key " + ", ".join(repr(k) for k in extra) + " (a typo? not in this script's compose subset)"
            if extra == ["version"] and not e.absolute_path:
                msg = "the top-level `version` is obsolete in Compose v2: remove it"
        if e.validator == "oneOf" and e.context:  # the most specific reason
            best = jsonschema.exceptions.best_match(e.context)
            msg = f"{msg.split(' is not valid under')[0]}: {best.message}"
        out.append((where or "(top level)", msg))
    return out


# ------------------------------------------------------------------------------------
# .dockerignore and the Dockerfile


class DockerIgnore:
    def __init__(self, path: Path):
        self.rules = []  # (regex, exclude?)
        if not path.is_file():
            return
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            neg = line.startswith("!")
            pat = line[1:].strip() if neg else line
            pat = str(PurePosixPath("/" + pat)).lstrip("/") or "."
            self.rules.append((re.compile(self._regex(pat)), not neg))

    @staticmethod
    def _regex(pat):
        out, i = "^", 0
        if pat.startswith("**/"):
            out += "(?:.*/)?"
            i = 3
        while i < len(pat):
            c = pat[i]
            if pat.startswith("**", i):
                out += ".*"
                i += 2
            elif c == "*":
                out += "[^/]*"
                i += 1
            elif c == "?":
                out += "[^/]"
                i += 1
            elif c == "[":
                j = pat.find("]", i)
                if j < 0:
                    out += re.escape(c)
                    i += 1
                else:
                    out += "[" + pat[i + 1:j].replace("!", "^", 1) + "]"
                    i = j + 1
            else:
                out += re.escape(c)
                i += 1
        return out + "$"

    def excluded(self, relpath: str) -> bool:
        parts = PurePosixPath(relpath).parts
        prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
        result = False
        for rx, exclude in self.rules:
            if any(rx.match(p) for p in prefixes):
                result = exclude
        return result


class Stage:
    def __init__(self, name, base):
        self.name = name
        self.base = base
        self.workdir = "/"
        self.copies = []  # (from_stage or None, [src], dst)


def parse_dockerfile(path: Path):
    text = path.read_text(encoding="utf-8")
    lines, buf = [], ""
    for raw in text.splitlines():
        s = raw.strip()
        if s.startswith("#") or (not s and not buf):
            continue
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        buf += s
        if buf.strip():
            lines.append(buf.strip())
        buf = ""
    if buf.strip():
        lines.append(buf.strip())

    args, stages = {}, []

    def subst(s, extra):
        env = {**args, **extra}
        return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: env.get(m.group(1), m.group(0)), s)

    stage_args = {}
    for line in lines:
        word, _, rest = line.partition(" ")
        word = word.upper()
        rest = rest.strip()
        if word == "ARG":
            k, _, v = rest.partition("=")
            (args if not stages else stage_args)[k.strip()] = v.strip().strip('"')
        elif word == "FROM":
            toks = [t for t in rest.split() if not t.startswith("--")]
            base = subst(toks[0], {})
            name = toks[2] if len(toks) >= 3 and toks[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(name, base))
            stage_args = {}
        elif not stages:
            continue
        elif word == "WORKDIR":
            wd = subst(rest, stage_args)
            st = stages[-1]
            st.workdir = str(PurePosixPath(st.workdir) / wd)
        elif word in ("COPY", "ADD"):
            if rest.startswith("["):
                toks = json.loads(rest)
                flags = []
            else:
                toks = shlex.split(rest)
                flags = [t for t in toks if t.startswith("--")]
                toks = [t for t in toks if not t.startswith("--")]
            frm = next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")), None)
            toks = [subst(t, stage_args) for t in toks]
            if len(toks) < 2:
                continue
            st = stages[-1]
            dst = toks[-1]
            if not dst.startswith("/"):
                dst = str(PurePosixPath(st.workdir) / dst) + ("/" if dst.endswith("/") or dst == "." else "")
            st.copies.append((frm, toks[:-1], dst))
    return stages


class Image:
    """Where the files of the locally built image come from."""

    def __init__(self, dockerfile: Path, context: Path):
        self.context = context
        self.stages = parse_dockerfile(dockerfile)
        self.final = self.stages[-1] if self.stages else None

    def _stage(self, name):
        return next((s for s in self.stages if s.name == name), None)

    def _resolve_in(self, stage, path, depth=0):
        """The repository path a COPY brought `path` of `stage` from, else None."""
        if stage is None or depth > 8:
            return None
        path = str(PurePosixPath(path))
        for frm, srcs, dst in reversed(stage.copies):
            for src in srcs:
                target = dst
                src_is_dir = src.endswith("/") or (frm is None and (self.context / src).is_dir())
                if not src_is_dir and (dst.endswith("/") or len(srcs) > 1):
                    target = str(PurePosixPath(dst) / PurePosixPath(src).name)
                target = str(PurePosixPath(target))
                if path == target or path.startswith(target.rstrip("/") + "/"):
                    remainder = path[len(target):].lstrip("/")
                    if frm is None:
                        p = self.context / src.rstrip("/")
                        return p / remainder if remainder else p
                    other = self._stage(frm)
                    if other is None:  # an external image
                        return None
                    inner = str(PurePosixPath(src) / remainder) if remainder else src
                    if not inner.startswith("/"):
                        inner = str(PurePosixPath(other.workdir) / inner)
                    return self._resolve_in(other, inner, depth + 1)
        return None

    def resolve(self, path):
        """The repository path an absolute path of the final image comes from, or None."""
        return self._resolve_in(self.final, path)


def filter_build_outputs():
    """filters/out files filters/build.sh produces: {repo-relative path: crate dir}."""
    build = ROOT / "filters" / "build.sh"
    out = {}
    if not build.is_file():
        return out
    text = build.read_text(encoding="utf-8")
    for var, sub in (("FILTERS", "filters/out"), ("WASIP1_FILTERS", "filters/out/wasip1")):
        m = re.search(rf"^{var}=\(([^)]*)\)", text, re.M)
        if m:
            for crate in m.group(1).split():
                out[f"{sub}/{crate}.wasm"] = ROOT / "filters" / crate
    return out


BUILD_OUTPUTS = filter_build_outputs()


def repo_file_status(p: Path):
    """'exists', 'built' (filters/build.sh makes it), or None."""
    if p.exists():
        return "exists"
    r = rel(p)
    crate = BUILD_OUTPUTS.get(r)
    if crate is not None and (crate / "Cargo.toml").is_file():
        return "built"
    if r in ("filters/out", "filters/out/wasip1"):
        return "built"
    return None


def check_dockerfile(dockerfile: Path, context: Path):
    R.section(f"{rel(dockerfile)} (build context {rel(context)})")
    if not dockerfile.is_file():
        R.error(rel(dockerfile), "missing")
        return None
    try:
        img = Image(dockerfile, context)
    except (ValueError, json.JSONDecodeError) as e:
        R.error(rel(dockerfile), f"cannot parse: {e}")
        return None
    if not img.stages:
        R.error(rel(dockerfile), "no FROM")
        return None
    ignore = DockerIgnore(context / ".dockerignore")
    n = 0
    for st in img.stages:
        for frm, srcs, dst in st.copies:
            if frm is not None:
                is_stage = img._stage(frm) is not None or (frm.isdigit() and int(frm) < len(img.stages))
                if not is_stage and not re.search(r"[:/@]", frm):
                    R.error(rel(dockerfile), f"stage {st.name}: COPY --from={frm}: no such stage (an image "
                                             "would need a tag or a registry path)")
                continue
            for src in srcs:
                n += 1
                matches = sorted(context.glob(src.rstrip("/"))) if any(c in src for c in "*?[") else [context / src]
                if not matches or not all(m.exists() for m in matches):
                    R.error(rel(dockerfile), f"stage {st.name}: COPY source {src} does not exist in the build context")
                    continue
                for m in matches:
                    r = os.path.relpath(m, context)
                    if r != "." and ignore.excluded(r):
                        R.error(rel(dockerfile), f"stage {st.name}: COPY source {src} is excluded by .dockerignore")
    R.ok(f"{len(img.stages)} stages ({', '.join(s.name + ' from ' + s.base for s in img.stages)}), "
         f"{n} COPY sources in the build context")
    hadolint = which_tool("hadolint")
    if hadolint:
        code, out = run_tool([hadolint, "--failure-threshold", "warning", str(dockerfile)])
        if code:
            R.error(rel(dockerfile), f"hadolint:\n{out}")
        else:
            R.ok("hadolint")
    else:
        R.note("hadolint not on PATH: Dockerfile lint skipped")
    return img


# ------------------------------------------------------------------------------------
# compose


class Service:
    def __init__(self, name, spec):
        self.name = name
        self.spec = spec
        self.mounts = []  # (container path, repo path)

    @property
    def image(self):
        return self.spec.get("image")

    def argv(self, key):
        v = self.spec.get(key)
        if v is None:
            return []
        return shlex.split(v) if isinstance(v, str) else [str(x) for x in v]

    def command_text(self):
        return " ".join(self.argv("entrypoint") + self.argv("command"))

    def env(self):
        e = self.spec.get("environment") or {}
        if isinstance(e, list):
            d = {}
            for item in e:
                k, _, v = item.partition("=")
                d[k] = v if "=" in item else None
            return d
        return {k: (None if v is None else str(v)) for k, v in e.items()}

    def resolve(self, path, image: Image | None, local_image: bool):
        """(repo path, how) for an absolute container path, or (None, None)."""
        best = None
        for target, src in self.mounts:
            t = target.rstrip("/") or "/"
            if path == t or path.startswith(t + "/"):
                if best is None or len(t) > len(best[0]):
                    best = (t, src)
        if best:
            rest = path[len(best[0]):].lstrip("/")
            return (best[1] / rest if rest else best[1]), "mount"
        if local_image and image is not None:
            p = image.resolve(path)
            if p is not None:
                return p, "image"
        return None, None

    def ports(self):
        """[(host_ip, published, target)] from short and long syntax."""
        out = []
        for p in self.spec.get("ports") or []:
            if isinstance(p, dict):
                out.append((p.get("host_ip", ""), str(p.get("published", "")), str(p.get("target"))))
                continue
            s = str(p).split("/")[0]
            if s.startswith("["):
                ip, _, s = s[1:].partition("]:")
                parts = [ip] + s.split(":")
            else:
                parts = s.split(":")
            if len(parts) == 3:
                out.append(tuple(parts))
            elif len(parts) == 2:
                out.append(("", parts[0], parts[1]))
            else:
                out.append(("", "", parts[0]))
        return out


def parse_volume(v):
    """(type, source, target) of a short or long volume entry."""
    if isinstance(v, dict):
        return v.get("type"), v.get("source"), v.get("target")
    parts = v.split(":")
    if len(parts) == 1:
        return "volume", None, parts[0]
    src, target = parts[0], parts[1]
    kind = "bind" if src.startswith((".", "/", "~")) else "volume"
    return kind, src, target


def check_compose(path: Path, env: dict):
    R.section(rel(path))
    raw = load_yaml(path)
    if raw is None:
        return None
    if not isinstance(raw, dict):
        R.error(rel(path), "top level is not a mapping")
        return None
    unset, ierrs = set(), []
    doc = interpolate_tree(raw, env, unset, "", ierrs)
    for where, msg in ierrs:
        R.error(f"{rel(path)}: {where}", msg)
    for name in sorted(unset):
        R.warn(rel(path), f"variable {name} is not set and has no default: it becomes an empty string")
    errs = schema_errors(doc, COMPOSE_SCHEMA)
    for where, msg in errs:
        R.error(f"{rel(path)}: {where}", msg)
    if errs:
        return None

    compose_dir = path.parent
    services = {n: Service(n, s) for n, s in doc["services"].items()}
    declared_volumes = set((doc.get("volumes") or {}).keys())
    built_images = {s.image for s in services.values() if s.spec.get("build") is not None and s.image}
    where = rel(path)

    for name, svc in services.items():
        w = f"{where}: services.{name}"
        b = svc.spec.get("build")
        if b is not None:
            ctx = b if isinstance(b, str) else b.get("context", ".")
            ctx_p = (compose_dir / ctx)
            if not ctx_p.is_dir() or not inside_repo(ctx_p):
                R.error(w, f"build context {ctx} is not a directory of the repository")
            else:
                df = "Dockerfile" if isinstance(b, str) else b.get("dockerfile", "Dockerfile")
                if not (ctx_p / df).is_file():
                    R.error(w, f"build.dockerfile {df} does not exist in {rel(ctx_p)}")
        img = svc.image
        if img and b is None and img not in built_images:
            tag = img.split("/")[-1]
            if ":" not in tag and "@" not in img:
                R.warn(w, f"image {img} has no tag: pin a version")
            elif tag.endswith(":latest"):
                R.warn(w, f"image {img}: pin a version rather than latest")
        for i, v in enumerate(svc.spec.get("volumes") or []):
            kind, src, target = parse_volume(v)
            if not target or not str(target).startswith("/"):
                R.error(f"{w}.volumes[{i}]", f"target {target!r} is not an absolute container path")
                continue
            if kind == "bind":
                if src is None:
                    R.error(f"{w}.volumes[{i}]", "bind mount without a source")
                    continue
                if src.startswith("~") or src.startswith("/"):
                    R.warn(f"{w}.volumes[{i}]", f"{src}: absolute host path, not part of the repository")
                    continue
                p = compose_dir / src
                if not inside_repo(p):
                    R.error(f"{w}.volumes[{i}]", f"{src} is outside the repository")
                elif not p.exists():
                    R.error(f"{w}.volumes[{i}]", f"{src} does not exist in the repository")
                else:
                    svc.mounts.append((target, p.resolve()))
            elif kind == "volume" and src is not None and src not in declared_volumes:
                R.error(f"{w}.volumes[{i}]", f"named volume {src} is not declared under top-level volumes")
        ef = svc.spec.get("env_file")
        for e in ([ef] if isinstance(ef, str) else ef or []):
            p, required = (e, True) if isinstance(e, str) else (e["path"], e.get("required", True))
            if required and not (compose_dir / p).is_file():
                R.error(w, f"env_file {p} does not exist")
        dep = svc.spec.get("depends_on") or {}
        for d, cond in (dep.items() if isinstance(dep, dict) else ((d, {}) for d in dep)):
            if d not in services:
                R.error(w, f"depends_on {d}: no such service")
            elif cond.get("condition") == "service_healthy":
                hc = services[d].spec.get("healthcheck")
                if not hc or hc.get("disable") or hc.get("test") in (["NONE"], "NONE"):
                    R.warn(w, f"depends_on {d} with service_healthy: {d} has no healthcheck here "
                              "(fine only if its image defines one)")
        for kind in ("configs", "secrets"):
            for i, ref in enumerate(svc.spec.get(kind) or []):
                src = ref if isinstance(ref, str) else ref["source"]
                if src not in (doc.get(kind) or {}):
                    R.error(f"{w}.{kind}[{i}]", f"{src} is not declared under top-level {kind}")

    for kind in ("configs", "secrets"):
        for n, spec in (doc.get(kind) or {}).items():
            if spec and spec.get("file"):
                p = compose_dir / spec["file"]
                if not p.is_file() or not inside_repo(p):
                    R.error(f"{where}: {kind}.{n}", f"file {spec['file']} does not exist in the repository")

    published = {}
    for name, svc in services.items():
        for ip, pub, target in svc.ports():
            if not target.split("-")[0].isdigit() or not 0 < int(target.split("-")[0]) < 65536:
                R.error(f"{where}: services.{name}.ports", f"bad container port {target}")
            if pub:
                key = (ip or "0.0.0.0", pub)
                if key in published:
                    R.error(f"{where}: services.{name}.ports", f"host port {pub} is also published by {published[key]}")
                published[key] = name

    docker_compose_config(path)
    R.ok(f"{len(services)} services ({', '.join(services)}), schema and paths")
    return doc, services


def docker_compose_config(path: Path):
    cmds = []
    if which_tool("docker"):
        cmds.append(["docker", "compose"])
    if which_tool("docker-compose"):
        cmds.append(["docker-compose"])
    for base in cmds:
        code, out = run_tool(base + ["version"], timeout=30)
        if code != 0 or not re.search(r"v?2\.\d+", out):
            continue
        code, out = run_tool(base + ["-f", str(path), "config", "--quiet"], cwd=path.parent, timeout=60)
        if code:
            R.error(rel(path), f"`{' '.join(base)} config` failed:\n{out}")
        else:
            R.ok(f"`{' '.join(base)} config`")
        return
    R.note("no Docker Compose v2 on PATH: `docker compose config` skipped (the schema subset above still ran)")


# ------------------------------------------------------------------------------------
# the Sluice policy run by compose


def sluice_services(services):
    return [s for s in services.values() if "--policy" in s.argv("command") or
            any(a.startswith("--policy=") for a in s.argv("command"))]


def policy_arg(svc):
    argv = svc.argv("command")
    for i, a in enumerate(argv):
        if a == "--policy" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--policy="):
            return a.split("=", 1)[1]
    return None


def split_hostport(s):
    host, _, port = s.rpartition(":")
    return host.strip("[]"), port


def check_policy(svc, services, image, local):
    info = {"admin": None, "token_env": None, "token_file": None}
    ppath = policy_arg(svc)
    w = f"services.{svc.name}"
    R.section(f"Sluice policy of service {svc.name} ({ppath})")
    if not ppath or not ppath.startswith("/"):
        R.error(w, f"--policy {ppath!r}: use an absolute container path")
        return info
    repo, how = svc.resolve(ppath, image, local(svc))
    if repo is None or not repo.is_file():
        R.error(w, f"--policy {ppath}: no bind mount or Dockerfile COPY provides it from the repository")
        return info
    R.ok(f"{ppath} is {rel(repo)} (by {how})")
    if tomllib is None:
        R.warn(rel(repo), "no tomllib (Python < 3.11): policy not checked")
        return info
    try:
        pol = tomllib.loads(repo.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        R.error(rel(repo), f"not valid TOML: {e}")
        return info
    info["repo"], info["container"] = repo, ppath
    where = rel(repo)
    server = pol.get("server", {})
    listen = server.get("listen", ["127.0.0.1:8080"])
    admin = server.get("admin", "127.0.0.1:9901")
    targets = {t for _, _, t in svc.ports()}
    for a in listen:
        host, port = split_hostport(a)
        if host.startswith("127.") or host in ("localhost", "::1"):
            R.error(where, f"listen {a} is loopback: unreachable from outside the container")
        if port not in targets:
            R.warn(where, f"listen {a}: port {port} is not published by {w}.ports")
    if admin not in ("off", ""):
        host, port = split_hostport(admin)
        info["admin"] = (host, port)
        if host.startswith("127.") or host in ("localhost", "::1"):
            R.error(where, f"admin {admin} is loopback: Prometheus cannot scrape it from its container")
        else:
            tenv, tfile = server.get("admin_token_env"), server.get("admin_token_file")
            info["token_env"], info["token_file"] = tenv, tfile
            if not tenv and not tfile:
                R.error(where, f"admin {admin} is off loopback: it needs admin_token_env (or admin_token_file)")
            if tenv:
                val = svc.env().get(tenv)
                if not val:
                    R.error(w, f"environment: {tenv} (the policy's admin_token_env) is not set")
    n_mod = 0
    base = PurePosixPath(ppath).parent
    for fname, f in (pol.get("filters") or {}).items():
        mod = f.get("module")
        if not isinstance(mod, str):
            R.error(where, f"filters.{fname}: no module")
            continue
        cpath = str(base / mod) if not mod.startswith("/") else mod
        cpath = os.path.normpath(cpath)
        p, how = svc.resolve(cpath, image, local(svc))
        status = repo_file_status(p) if p is not None else None
        if status is None:
            shown = mod if mod == cpath else f"{mod} ({cpath} in the container)"
            R.error(where, f"filters.{fname}: module {shown} is neither in the image nor mounted from the "
                           "repository" + (f" (it would be {rel(p)})" if p else ""))
        else:
            n_mod += 1
    for pname, pool in (pol.get("pools") or {}).items():
        for peer in pool.get("peers", []):
            host, port = split_hostport(peer)
            if re.fullmatch(r"[\d.]+|[0-9a-fA-F:]+", host):
                R.warn(where, f"pools.{pname}: peer {peer} is an address, not a compose service")
                continue
            if host not in services:
                R.error(where, f"pools.{pname}: peer {peer}: {host} is not a service of the compose file")
                continue
            peer_svc = services[host]
            text = peer_svc.command_text()
            exposed = {str(e) for e in peer_svc.spec.get("expose") or []} | {t for _, _, t in peer_svc.ports()}
            if f":{port}" not in text and port not in exposed:
                R.warn(where, f"pools.{pname}: peer {peer}: service {host} shows no sign of listening on {port}")
            dep = svc.spec.get("depends_on") or {}
            if host not in dep:
                R.warn(w, f"depends_on lacks {host}: the peer {peer} must resolve when the policy loads")
    R.ok(f"listeners {listen}, admin {admin}, {n_mod} filter modules in the image")
    return info


def sluice_check(sluice_bin, svc, info, image, local, services):
    """Run `sluice check` on the compose policy with container paths and peers mapped here."""
    R.section(f"`{sluice_bin} check` on {rel(info['repo'])}")
    text = info["repo"].read_text(encoding="utf-8")
    pol = tomllib.loads(text)
    base = PurePosixPath(info["container"]).parent

    def swap(old, new):
        nonlocal text
        for q in ('"', "'"):
            text = text.replace(f"{q}{old}{q}", json.dumps(new) if q == '"' else f"'{new}'")

    for f in (pol.get("filters") or {}).values():
        mod = f.get("module")
        if isinstance(mod, str):
            cpath = os.path.normpath(str(base / mod) if not mod.startswith("/") else mod)
            p, _ = svc.resolve(cpath, image, local(svc))
            if p is not None:
                swap(mod, str(p))
    tf = (pol.get("server") or {}).get("admin_token_file")
    if tf:
        p, _ = svc.resolve(os.path.normpath(str(base / tf)), image, local(svc))
        if p is not None:
            swap(tf, str(p))
    for pool in (pol.get("pools") or {}).values():
        for peer in pool.get("peers", []):
            host, port = split_hostport(peer)
            if host in services:
                swap(peer, f"127.0.0.1:{port}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    env.update({"SLUICE_CACHE_DIR": "off", "SLUICE_LOG": "warn"})
    for k, v in svc.env().items():
        if v is not None:
            env[k] = v
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d) / "policy.toml"
        tmp.write_text(text, encoding="utf-8")
        code, out = run_tool([sluice_bin, "check", "--policy", str(tmp)], env=env, timeout=300)
    if code:
        R.error(rel(info["repo"]), f"`sluice check` failed (container paths mapped to the repository):\n{out}")
    else:
        R.ok("sluice check")


# ------------------------------------------------------------------------------------
# Prometheus


def parse_duration(s):
    m = re.fullmatch(r"((\d+)y)?((\d+)w)?((\d+)d)?((\d+)h)?((\d+)m)?((\d+)s)?((\d+)ms)?", str(s))
    if not m or not s:
        return None
    mult = {2: 31536000, 4: 604800, 6: 86400, 8: 3600, 10: 60, 12: 1, 14: 0.001}
    return sum(int(m.group(g)) * f for g, f in mult.items() if m.group(g))


def check_prometheus(services, sluice_info, image, local):
    proms = [s for s in services.values() if (s.image or "").split(":")[0].endswith("prometheus")]
    if not proms:
        R.section("Prometheus")
        R.error("docker-compose.yml", "no prometheus service")
        return
    svc = proms[0]
    w = f"services.{svc.name}"
    text = svc.command_text()
    m = re.search(r"--config\.file[= ](\S+)", text)
    cpath = m.group(1) if m else "/etc/prometheus/prometheus.yml"
    repo, how = svc.resolve(cpath, image, local(svc))
    R.section(f"Prometheus (service {svc.name}, {cpath})")
    if repo is None or not repo.is_file():
        R.error(w, f"{cpath} is not mounted from the repository")
        return
    cfg = load_yaml(repo)
    if cfg is None:
        return
    where = rel(repo)
    if not isinstance(cfg, dict) or not isinstance(cfg.get("scrape_configs"), list):
        R.error(where, "no scrape_configs list")
        return
    glob_ = cfg.get("global") or {}
    sluice_names = {s.name for s in sluice_services(services)}
    found = False
    for i, job in enumerate(cfg["scrape_configs"]):
        if not isinstance(job, dict):
            R.error(f"{where}: scrape_configs[{i}]", "not a mapping")
            continue
        jw = f"{where}: scrape_configs[{i}] ({job.get('job_name')})"
        for sc in job.get("static_configs") or []:
            if not isinstance(sc, dict):
                R.error(jw, "a static_configs entry is not a mapping")
                continue
            for t in sc.get("targets") or []:
                host, port = split_hostport(str(t))
                if host not in services:
                    R.error(jw, f"target {t}: {host} is not a compose service")
                    continue
                if host not in sluice_names:
                    continue
                found = True
                adm = sluice_info.get(host, {}).get("admin")
                if adm and port != adm[1]:
                    R.error(jw, f"target {t}: the policy's admin port is {adm[1]}")
                path = job.get("metrics_path", "/metrics")
                if path != "/metrics":
                    R.error(jw, f"metrics_path {path}: Sluice serves /metrics")
                iv = job.get("scrape_interval", glob_.get("scrape_interval", "1m"))
                to = job.get("scrape_timeout", glob_.get("scrape_timeout", "10s"))
                if parse_duration(iv) is None:
                    R.error(jw, f"scrape_interval {iv!r} is not a duration")
                elif parse_duration(iv) != 5:
                    R.warn(jw, f"scrape_interval {iv}: the dashboard and datasource assume 5s")
                if "scrape_timeout" in job and parse_duration(to) and parse_duration(iv) and \
                        parse_duration(to) > parse_duration(iv):
                    R.error(jw, f"scrape_timeout {to} exceeds scrape_interval {iv}")
                info = sluice_info.get(host, {})
                needs_token = bool(info.get("token_env") or info.get("token_file"))
                auth = job.get("authorization")
                if needs_token and not auth:
                    R.error(jw, "Sluice's admin port needs a bearer token: add authorization "
                                "(type: Bearer, credentials or credentials_file)")
                if auth:
                    if auth.get("type", "Bearer") != "Bearer":
                        R.error(jw, f"authorization.type {auth.get('type')}: Sluice takes Bearer")
                    cf, cr = auth.get("credentials_file"), auth.get("credentials")
                    if not cf and not cr:
                        R.error(jw, "authorization has neither credentials nor credentials_file")
                    if cf:
                        mounted, _ = svc.resolve(cf, None, False)
                        if mounted is None and cf not in text:
                            R.error(jw, f"credentials_file {cf}: neither mounted nor written by the "
                                        f"{svc.name} service's command")
                        elif mounted is None and info.get("token_env"):
                            tv = info["token_env"]
                            if f"${tv}" not in text and f"${{{tv}}}" not in text:
                                R.warn(jw, f"the {svc.name} command writes {cf} but does not use ${tv}")
                            sluice_tok = services[host].env().get(tv)
                            prom_tok = svc.env().get(tv)
                            if sluice_tok != prom_tok:
                                R.error(w, f"environment {tv} differs from the {host} service's")
                    if cr and info.get("token_env") and services[host].env().get(info["token_env"]) != cr:
                        R.error(jw, "authorization.credentials differs from the token the Sluice service gets")
    if not found:
        R.error(where, "no static target names the Sluice service (sluice:<admin port>)")
    promtool = which_tool("promtool")
    if promtool:
        # --syntax-only: the credentials file exists only inside the container.
        code, out = run_tool([promtool, "check", "config", "--syntax-only", str(repo)])
        if code:
            R.error(where, f"promtool check config:\n{out}")
        else:
            R.ok("promtool check config --syntax-only")
    else:
        R.note("promtool not on PATH: `promtool check config` skipped")
    if found:
        R.ok("scrapes Sluice's admin port on /metrics")


# ------------------------------------------------------------------------------------
# Grafana


GRAFANA_SPECIAL_DS = {"-- Grafana --", "-- Mixed --", "-- Dashboard --", "grafana"}


def check_grafana(services, image, local):
    graf = [s for s in services.values() if (s.image or "").split(":")[0].endswith("grafana/grafana")
            or s.name == "grafana"]
    if not graf:
        R.section("Grafana")
        R.error("docker-compose.yml", "no grafana service")
        return []
    svc = graf[0]
    w = f"services.{svc.name}"
    prov_root = svc.env().get("GF_PATHS_PROVISIONING") or "/etc/grafana/provisioning"
    R.section(f"Grafana provisioning (service {svc.name}, {prov_root})")
    ds_uids, ds_names, dash_files = set(), set(), []
    loaded = set()
    repo_prov = ROOT / "deploy" / "grafana" / "provisioning"
    for kind in ("datasources", "dashboards", "plugins", "alerting", "notifiers", "access-control"):
        cdir = f"{prov_root}/{kind}"
        d, _ = svc.resolve(cdir, None, False)
        if d is None:
            continue
        files = sorted(p for p in d.glob("*") if p.suffix in (".yml", ".yaml", ".json"))
        if not files:
            R.warn(w, f"{cdir} is mounted from {rel(d)}, which has no provisioning file")
        for f in files:
            loaded.add(f.resolve())
            doc = load_yaml(f)
            if doc is None:
                continue
            fw = rel(f)
            if not isinstance(doc, dict):
                R.error(fw, "not a mapping")
                continue
            if doc.get("apiVersion") not in (1, "1"):
                R.error(fw, f"apiVersion {doc.get('apiVersion')!r}: Grafana expects 1")
            if kind == "datasources":
                for i, ds in enumerate(doc.get("datasources") or []):
                    if not isinstance(ds, dict):
                        R.error(fw, f"datasources[{i}] is not a mapping")
                        continue
                    for key in ("name", "type"):
                        if not ds.get(key):
                            R.error(fw, f"datasources[{i}] has no {key}")
                    ds_names.add(ds.get("name"))
                    if ds.get("uid"):
                        ds_uids.add(ds["uid"])
                    url = ds.get("url", "")
                    m = re.match(r"^https?://([^/:]+)(?::(\d+))?", url)
                    if not m:
                        R.error(fw, f"datasources[{i}]: url {url!r} is not http(s)://host:port")
                    elif m.group(1) not in services:
                        R.error(fw, f"datasources[{i}]: url {url}: {m.group(1)} is not a compose service")
                    if ds.get("type") == "prometheus" and m and m.group(1) in services:
                        target = services[m.group(1)]
                        if not (target.image or "").split(":")[0].endswith("prometheus"):
                            R.warn(fw, f"datasources[{i}]: {m.group(1)} does not run a Prometheus image")
                        if m.group(2) and m.group(2) != "9090" and f":{m.group(2)}" not in target.command_text():
                            R.warn(fw, f"datasources[{i}]: Prometheus listens on 9090 unless told otherwise")
            elif kind == "dashboards":
                for i, pr in enumerate(doc.get("providers") or []):
                    if not isinstance(pr, dict):
                        R.error(fw, f"providers[{i}] is not a mapping")
                        continue
                    path = (pr.get("options") or {}).get("path")
                    if not pr.get("name"):
                        R.error(fw, f"providers[{i}] has no name")
                    if pr.get("type", "file") != "file":
                        continue
                    if not path:
                        R.error(fw, f"providers[{i}] has no options.path")
                        continue
                    d2, _ = svc.resolve(path, None, False)
                    if d2 is None or not d2.is_dir():
                        R.error(fw, f"providers[{i}]: {path} is not mounted from a repository directory")
                        continue
                    found = sorted(d2.rglob("*.json"))
                    if not found:
                        R.error(fw, f"providers[{i}]: {rel(d2)} has no dashboard JSON")
                    dash_files += found
    if repo_prov.is_dir():
        for f in sorted(repo_prov.rglob("*")):
            if f.is_file() and f.suffix in (".yml", ".yaml", ".json") and f.resolve() not in loaded:
                R.error(rel(f), f"not mounted into the {svc.name} service's {prov_root}: Grafana never reads it")
    if not ds_names:
        R.error(w, "no datasource is provisioned")
    if not dash_files:
        R.error(w, "no dashboard is provisioned")
    home = svc.env().get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        p, _ = svc.resolve(home, None, False)
        if p is None or not p.is_file():
            R.error(w, f"GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH {home} is not mounted from the repository")
    R.ok(f"datasources {sorted(ds_names)} (uids {sorted(ds_uids)}), dashboards {[rel(f) for f in dash_files]}")
    return [(f, ds_uids, ds_names) for f in dash_files]


# ------------------------------------------------------------------------------------
# dashboards and metric names


METRIC_RE = re.compile(r"(?<![A-Za-z0-9_:])(sluice_[A-Za-z0-9_:]*)")
STRING_RE = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
GRAFANA_VARS = {
    "$__rate_interval": "1m", "${__rate_interval}": "1m", "$__interval_ms": "60000", "$__interval": "1m",
    "${__interval}": "1m", "$__range_s": "3600", "$__range_ms": "3600000", "$__range": "1h", "${__range}": "1h",
}
HIST_SUFFIXES = ("_bucket", "_sum", "_count")


class Exported:
    def __init__(self, path: Path | None, optional):
        self.names, self.types, self.optional = set(), {}, set(optional)
        self.path = path
        if path is None:
            return
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if not line:
                continue
            if line.startswith("# TYPE "):
                parts = line.split()
                if len(parts) >= 4:
                    self.names.add(parts[2])
                    self.types[parts[2]] = parts[3]
                continue
            if line.startswith("#"):
                continue
            m = re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", line)
            if m:
                self.names.add(m.group(0))

    def family(self, name):
        """(family, error) for a series name used in PromQL; family None when unknown."""
        for suf in HIST_SUFFIXES:  # a series of a typed histogram or summary (raw scrapes)
            base = name[: -len(suf)]
            if name.endswith(suf) and self.types.get(base) in ("histogram", "summary"):
                if suf == "_bucket" and self.types[base] == "summary":
                    return base, f"{base} is a summary: it has no _bucket series"
                return base, None
        if name in self.names:
            t = self.types.get(name)
            if t == "histogram":
                return name, "a histogram has no series of its own name: use _bucket, _sum or _count"
            return name, None
        for suf in HIST_SUFFIXES:
            if name.endswith(suf):
                base = name[: -len(suf)]
                if base in self.names:
                    t = self.types.get(base)
                    if suf == "_bucket" and t not in (None, "histogram"):
                        return base, f"{base} is a {t}: it has no _bucket series"
                    if t not in (None, "histogram", "summary"):
                        return base, f"{base} is a {t}: it has no {suf} series"
                    return base, None
        if name.endswith("_total") and self.types.get(name[:-6]) == "counter":
            return name[:-6], None  # OpenMetrics family names
        return None, None


def strip_strings(expr):
    return STRING_RE.sub('""', expr)


def brackets_balanced(expr):
    s = strip_strings(expr)
    stack, pairs = [], {")": "(", "]": "[", "}": "{"}
    for c in s:
        if c in "([{":
            stack.append(c)
        elif c in ")]}":
            if not stack or stack.pop() != pairs[c]:
                return False
    return not stack and s.count('"') % 2 == 0


def walk_panels(panels, out):
    for p in panels or []:
        out.append(p)
        if isinstance(p, dict) and p.get("panels"):
            walk_panels(p["panels"], out)
    return out


def check_dashboard(path: Path, ds_uids, ds_names, exported: Exported | None, used_families):
    R.section(f"dashboard {rel(path)}")
    where = rel(path)
    errors_before = R.errors
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        R.error(where, f"not valid JSON: {e}")
        return
    if not isinstance(d, dict):
        R.error(where, "not a JSON object")
        return
    for key, typ in (("title", str), ("uid", str), ("schemaVersion", int), ("panels", list)):
        if not isinstance(d.get(key), typ):
            R.error(where, f"{key} missing or not a {typ.__name__}")
    if isinstance(d.get("uid"), str) and not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", d["uid"]):
        R.error(where, f"uid {d['uid']!r}: at most 40 of [A-Za-z0-9_-]")
    if isinstance(d.get("schemaVersion"), int) and d["schemaVersion"] < 36:
        R.warn(where, f"schemaVersion {d['schemaVersion']} is old (Grafana 10/11 write 38-41)")
    tvars = {v.get("name") for v in (d.get("templating") or {}).get("list", []) if isinstance(v, dict)}
    bad_uids = {}  # uid -> where used

    def check_ds(ds, w):
        if ds is None:
            return
        if isinstance(ds, str):
            if ds.startswith("$"):
                if ds.strip("${}") not in tvars:
                    R.error(w, f"datasource {ds}: no such dashboard variable")
            elif ds not in ds_names and ds not in GRAFANA_SPECIAL_DS:
                R.error(w, f"datasource {ds!r} is not provisioned")
            return
        uid = ds.get("uid")
        if uid is None or uid in GRAFANA_SPECIAL_DS:
            return
        if uid.startswith("$"):
            if uid.strip("${}") not in tvars:
                R.error(w, f"datasource uid {uid}: no such dashboard variable")
        elif uid not in ds_uids:
            bad_uids.setdefault(uid, []).append(w)

    queries = []  # (where, expr)
    panels = walk_panels(d.get("panels"), [])
    ids, boxes = {}, []
    for p in panels:
        if not isinstance(p, dict):
            R.error(where, "a panel is not an object")
            continue
        pid = p.get("id")
        pw = f"{where}: panel {pid} {p.get('title', '')!r}"
        if not isinstance(pid, int):
            R.error(pw, "id missing or not an integer")
        elif pid in ids:
            R.error(pw, f"id {pid} is also panel {ids[pid]!r}")
        else:
            ids[pid] = p.get("title")
        if not p.get("type"):
            R.error(pw, "no type")
        g = p.get("gridPos") or {}
        if not all(isinstance(g.get(k), int) for k in ("h", "w", "x", "y")):
            R.error(pw, "gridPos needs integer h, w, x, y")
        else:
            if g["w"] < 1 or g["h"] < 1 or g["x"] < 0 or g["x"] + g["w"] > 24:
                R.error(pw, f"gridPos {g} does not fit the 24-column grid")
            if p in (d.get("panels") or []):
                for other, og in boxes:
                    if (g["x"] < og["x"] + og["w"] and og["x"] < g["x"] + g["w"]
                            and g["y"] < og["y"] + og["h"] and og["y"] < g["y"] + g["h"]):
                        R.error(pw, f"gridPos overlaps panel {other}")
                boxes.append((pid, g))
        if p.get("type") == "row":
            continue
        check_ds(p.get("datasource"), pw)
        refs = set()
        targets = p.get("targets") or []
        if not targets and p.get("type") not in ("text", "news", "dashlist"):
            R.error(pw, "no targets")
        for t in targets:
            ref = t.get("refId")
            if not ref or ref in refs:
                R.error(pw, f"refId {ref!r} missing or repeated")
            refs.add(ref)
            check_ds(t.get("datasource"), f"{pw} {ref}")
            expr = t.get("expr")
            if not isinstance(expr, str) or not expr.strip():
                R.error(f"{pw} {ref}", "no PromQL expr")
                continue
            queries.append((f"{pw} {ref}", expr))
    for i, a in enumerate((d.get("annotations") or {}).get("list", [])):
        if isinstance(a, dict) and a.get("expr"):
            check_ds(a.get("datasource"), f"{where}: annotation {a.get('name')!r}")
            queries.append((f"{where}: annotation {a.get('name')!r}", a["expr"]))
    for v in (d.get("templating") or {}).get("list", []):
        q = v.get("query") if isinstance(v, dict) else None
        if isinstance(q, dict):
            q = q.get("query")
        if isinstance(q, str) and "sluice_" in q:
            queries.append((f"{where}: variable {v.get('name')}", q))

    for uid, places in bad_uids.items():
        R.error(places[0], f"datasource uid {uid!r} is not provisioned (have {sorted(ds_uids)})"
                           + (f"; {len(places) - 1} more panels and queries use it" if len(places) > 1 else ""))
    names_here, optional_used = set(), set()
    for w, expr in queries:
        if not brackets_balanced(expr):
            R.error(w, f"unbalanced brackets or quotes: {expr}")
        for var in re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", expr):
            if not var.startswith("__") and var not in tvars:
                R.error(w, f"${var}: no such dashboard variable")
        bare = strip_strings(expr)
        names = METRIC_RE.findall(bare)
        if not names and not w.split(": ")[-1].startswith("variable"):
            R.error(w, f"references no sluice_ metric: {expr}")
        if "histogram_quantile" in bare:
            for n in names:
                if not n.endswith("_bucket"):
                    R.error(w, f"histogram_quantile over {n}: use the _bucket series")
            if not re.search(r"\bby\s*\([^)]*\ble\b[^)]*\)", bare):
                R.error(w, "histogram_quantile: aggregate the buckets `by (..., le)`")
        for n in names:
            names_here.add(n)
            if exported is None:
                continue
            fam, err = exported.family(n)
            if err:
                R.error(w, f"{n}: {err}")
            if fam is None:
                if n in exported.optional:
                    R.note(f"{w}: {n} is not in {exported.path} (allowed by --optional)")
                    used_families.add(n)
                    optional_used.add(n)
                else:
                    R.error(w, f"{n} is not exported by Sluice (not in {exported.path})")
            else:
                used_families.add(fam)
                t = exported.types.get(fam)
                if t == "gauge" and re.search(rf"\b(rate|irate|increase)\s*\(\s*{re.escape(n)}\b", bare):
                    R.error(w, f"rate/increase over the gauge {n}")
    promql_syntax(path, queries)
    summary = (f"{len([p for p in panels if p.get('type') != 'row'])} panels, {len(queries)} queries, "
               f"{len(names_here)} sluice_ series names")
    if exported is not None and R.errors == errors_before:
        summary += f", every one exported (per {exported.path})"
        if optional_used:
            summary += f" or allowed by --optional ({len(optional_used)})"
    R.ok(summary)


def promql_syntax(path, queries):
    promtool = which_tool("promtool")
    if not promtool or not queries:
        if not promtool:
            R.note("promtool not on PATH: PromQL parsed for brackets only")
        return
    groups = []
    for i, (w, expr) in enumerate(queries):
        e = expr
        for k in sorted(GRAFANA_VARS, key=len, reverse=True):
            e = e.replace(k, GRAFANA_VARS[k])
        groups.append({"name": f"q{i}", "rules": [{"record": f"check_deploy:q{i}", "expr": e}]})
    with tempfile.NamedTemporaryFile("w", suffix=".rules.yml", delete=False) as f:
        yaml.safe_dump({"groups": groups}, f)
        tmp = f.name
    try:
        code, out = run_tool([promtool, "check", "rules", tmp])
    finally:
        os.unlink(tmp)
    if code == 0:
        R.ok(f"promtool parsed all {len(queries)} PromQL expressions")
        return
    bad = set(int(m) for m in re.findall(r'group "q(\d+)"', out))
    for i in sorted(bad):
        R.error(queries[i][0], f"PromQL does not parse: {queries[i][1]}")
    if not bad:
        R.error(rel(path), f"promtool check rules:\n{out}")
    else:
        print("  promtool said:\n    " + out.replace("\n", "\n    "))


# ------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--exported", type=Path, metavar="FILE",
                    help="metric families Sluice exports, one a line (or a raw /metrics scrape)")
    ap.add_argument("--optional", action="append", default=[], metavar="NAME",
                    help="a metric the dashboard may use though FILE lacks it (repeatable)")
    ap.add_argument("--skip-metrics", action="store_true",
                    help="do not check metric names against an exported list")
    ap.add_argument("--sluice", metavar="BIN", help="also run `BIN check` on the compose policy")
    ap.add_argument("--compose", type=Path, default=ROOT / "docker-compose.yml", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.exported is None and not args.skip_metrics:
        ap.error("--exported FILE is required (or --skip-metrics)")
    if args.exported is not None and not args.exported.is_file():
        ap.error(f"--exported {args.exported}: no such file")
    exported = Exported(args.exported, args.optional) if args.exported else None
    if exported is not None and not any(n.startswith("sluice_") for n in exported.names):
        R.error(str(args.exported), "lists no sluice_ metric")

    compose = args.compose.resolve()
    env = dotenv(compose.parent / ".env")
    res = check_compose(compose, env)
    if res is None:
        return finish()
    doc, services = res

    image = None
    builders = [s for s in services.values() if s.spec.get("build") is not None]
    for b in builders:
        spec = b.spec["build"]
        ctx = compose.parent / (spec if isinstance(spec, str) else spec.get("context", "."))
        df = ctx / ("Dockerfile" if isinstance(spec, str) else spec.get("dockerfile", "Dockerfile"))
        image = check_dockerfile(df, ctx) or image
    built = {s.image for s in builders if s.image}

    def local(svc):
        return svc.spec.get("build") is not None or (svc.image in built)

    R.section("services running the locally built image")
    for svc in services.values():
        if not local(svc):
            continue
        for a in svc.argv("entrypoint") + svc.argv("command"):
            for val in ([a.split("=", 1)[1]] if a.startswith("--") and "=" in a else [a]):
                if val.startswith("/"):
                    p, how = svc.resolve(val, image, True)
                    if p is None or repo_file_status(p) is None:
                        R.error(f"services.{svc.name}", f"command path {val} is neither in the image "
                                                        "(Dockerfile COPY) nor mounted from the repository")
        R.ok(f"{svc.name}: command paths {svc.argv('command')}")

    sluice_info = {}
    for svc in sluice_services(services):
        info = check_policy(svc, services, image, local)
        sluice_info[svc.name] = info
        if args.sluice and info.get("repo"):
            sluice_check(args.sluice, svc, info, image, local, services)
    if not sluice_info:
        R.error(rel(compose), "no service runs Sluice with --policy")

    check_prometheus(services, sluice_info, image, local)
    used = set()
    for f, uids, names in check_grafana(services, image, local):
        check_dashboard(f, uids, names, exported, used)

    if exported is not None:
        R.section("metric coverage")
        # Filter-defined sluice_wasm_* families depend on the scraped policy's filters.
        fams = {exported.family(n)[0] for n in exported.names
                if n.startswith("sluice_") and not n.startswith("sluice_wasm_")}
        unused = sorted(f for f in fams if f and f not in used)
        if unused:
            R.note("exported but on no dashboard: " + ", ".join(unused))
        else:
            R.ok("every exported sluice_ family is on a dashboard")
    return finish()


def finish():
    print(f"check-deploy: {R.errors} errors, {R.warnings} warnings")
    return 1 if R.errors else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception:  # a file shaped in a way this script did not foresee
        import traceback
        traceback.print_exc()
        print("check-deploy: error: internal error (above) while checking; the files may be malformed")
        sys.exit(1)
