#!/usr/bin/env bash
# The reference thin-client bindings against the emulator, for CI:
#
#   * Python, katzenpost_thinclient from PyPI: 0.0.15 (the pinned API) and the
#     newest release checked (KATZENPOST_PY_VERSIONS overrides the list), each
#     in its own venv under ~/.cache/katzenpost-ci. With each version:
#       - our scenarios, test/emulator/python-reference.test.ts (mocha, with
#         KATZENPOST_PYTHON set to that venv's interpreter);
#       - the binding's own integration tests that need only a daemon on
#         127.0.0.1:64331 (tests/test_core.py, test_new_methods.py,
#         test_new_pigeonhole_api.py, test_session_resume.py), run from the
#         release's sdist unpacked in a temporary directory, when that sdist
#         carries them (0.0.15 does; later sdists ship no tests, so for those
#         our scenarios are what the emulator must pass).
#   * Rust, katzenpost_thin_client from crates.io (pinned in
#     test/reference/rust/Cargo.toml): test/reference/rust, built with cargo
#     (CARGO_TARGET_DIR under ~/.cache/katzenpost-ci), run against the emulator.
#
# The emulator is started here from dist/ (run `npm run build` first) on
# 127.0.0.1:64331, the address the binding's tests dial; that port must be free.
# Closes with one line "N passed, M failed" over everything. A step that
# cannot run (an install, a build, a missing sdist, a skipped test) counts as
# a failure: nothing is skipped. Exits non-zero on any failure.
set -uo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/katzenpost-ci"
ART="$ROOT/test-artifacts/reference"
PY_VERSIONS=${KATZENPOST_PY_VERSIONS:-"0.0.15 0.0.25"}
# The test tools, pinned so that a new release cannot change what runs.
PY_TEST_TOOLS=(pytest==9.2.0 pytest-asyncio==1.5.0 pytest-timeout==2.4.0)
# The binding's tests that need nothing but a daemon on 127.0.0.1:64331.
PY_OWN_TESTS=(tests/test_core.py tests/test_new_methods.py tests/test_new_pigeonhole_api.py tests/test_session_resume.py)
EMULATOR_ADDRESS=127.0.0.1:64331
export CI="${CI:-true}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 npm_config_update_notifier=false
mkdir -p "$CACHE" "$ART"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/katzenpost-reference.XXXXXX")
EMU_PID=""

cleanup() {
  if [[ -n "$EMU_PID" ]]; then
    kill "$EMU_PID" 2>/dev/null || true
    wait "$EMU_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

PASSED=0
FAILED=0
PROBLEMS=()
T0=$SECONDS

step() { echo; echo "=== $* ==="; }
# A step that could not run at all: one failure, with the reason.
broken() {
  FAILED=$((FAILED + 1))
  PROBLEMS+=("$1")
  echo "!!! $1"
}
# Add the "N passed, M failed[, K skipped]" closing line of a log; skipped tests count as failed.
count_log() {
  local log=$1 label=$2 line p f s
  line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1 || true)
  if [[ -z "$line" ]]; then
    broken "$label: no 'N passed, M failed' line (it crashed or did not start; see $log)"
    return
  fi
  p=$(sed -E 's/^([0-9]+) passed.*/\1/' <<<"$line")
  f=$(sed -E 's/^[0-9]+ passed, ([0-9]+) failed.*/\1/' <<<"$line")
  s=$(grep -oE '[0-9]+ skipped' <<<"$line" | grep -oE '[0-9]+' || echo 0)
  PASSED=$((PASSED + p))
  FAILED=$((FAILED + f + s))
  [[ $f -gt 0 ]] && PROBLEMS+=("$label: $f failed")
  [[ $s -gt 0 ]] && PROBLEMS+=("$label: $s skipped (counted as failed)")
  echo "--- $label: $line"
}

# ------------------------------------------------------------------ the emulator
step "emulator on $EMULATOR_ADDRESS"
if [[ ! -f "$ROOT/dist/emulator/cli.js" ]]; then
  broken "dist/emulator/cli.js is missing: run npm run build before this script"
else
  node -e "
    const s = require('net').connect(64331, '127.0.0.1');
    s.on('connect', () => process.exit(1));
    s.on('error', () => process.exit(0));
  " || broken "something already listens on $EMULATOR_ADDRESS; the reference tests need that port"
  node "$ROOT/dist/emulator/cli.js" --listen "$EMULATOR_ADDRESS" </dev/null >"$ART/emulator.log" 2>&1 &
  EMU_PID=$!
  for _ in $(seq 1 100); do
    grep -q '^listening on' "$ART/emulator.log" 2>/dev/null && break
    kill -0 "$EMU_PID" 2>/dev/null || break
    sleep 0.1
  done
  if grep -q '^listening on' "$ART/emulator.log" 2>/dev/null; then
    grep '^listening on' "$ART/emulator.log"
  else
    broken "the emulator did not start (see $ART/emulator.log)"
    cat "$ART/emulator.log"
    EMU_PID=""
  fi
fi
emulator_up() { [[ -n "$EMU_PID" ]] && kill -0 "$EMU_PID" 2>/dev/null; }

# ------------------------------------------------------------------ Python
PYTHON3=$(command -v python3 || true)
if [[ -z "$PYTHON3" ]]; then
  broken "python3 is not installed: no Python binding can run"
else
  step "Python: $("$PYTHON3" --version 2>&1); katzenpost_thinclient $PY_VERSIONS"
  NEWEST=$("$PYTHON3" -m pip index versions katzenpost_thinclient 2>/dev/null | sed -nE 's/^katzenpost_thinclient \(([^)]+)\).*/\1/p' | head -n 1)
  if [[ -n "$NEWEST" && " $PY_VERSIONS " != *" $NEWEST "* ]]; then
    echo "note: PyPI's newest katzenpost_thinclient is $NEWEST, not among those tested ($PY_VERSIONS); set KATZENPOST_PY_VERSIONS or update this script"
  fi
fi

# One venv per version; reused while it still holds exactly that version and the test tools.
prepare_venv() {
  local v=$1 venv="$CACHE/py-$1"
  if "$venv/bin/python" - "$v" >/dev/null 2>&1 <<'EOF'
import importlib.metadata as m, sys
assert m.version("katzenpost_thinclient") == sys.argv[1]
import pytest, pytest_asyncio, pytest_timeout
EOF
  then
    return 0
  fi
  "$PYTHON3" -m venv --clear "$venv" >"$ART/venv-$v.log" 2>&1 &&
    "$venv/bin/python" -m pip install --no-input "katzenpost_thinclient==$v" "${PY_TEST_TOOLS[@]}" >>"$ART/venv-$v.log" 2>&1
}

# The release's sdist (cached): its tests/ and testdata/, when it has them.
own_tests_dir() {
  local v=$1 sdists="$CACHE/sdist" tarball dest="$WORK/own-tests-$1"
  mkdir -p "$sdists"
  tarball="$sdists/katzenpost_thinclient-$v.tar.gz"
  if [[ ! -f "$tarball" ]]; then
    # The source distribution of this package only (its build tools may come as wheels).
    "$PYTHON3" -m pip download --no-input --no-binary katzenpost_thinclient --no-deps -d "$sdists" "katzenpost_thinclient==$v" >"$ART/sdist-$v.log" 2>&1 || return 2
  fi
  [[ -f "$tarball" ]] || return 2
  mkdir -p "$dest"
  tar -xzf "$tarball" -C "$dest" --strip-components=1 || return 2
  local t
  for t in "${PY_OWN_TESTS[@]}"; do [[ -f "$dest/$t" ]] || return 1; done
  # Only the tests, their data and pytest.ini: the binding under test is the venv's installed one.
  mkdir -p "$dest/run"
  cp -r "$dest/tests" "$dest/testdata" "$dest/run/" && { [[ ! -f "$dest/pytest.ini" ]] || cp "$dest/pytest.ini" "$dest/run/"; } || return 2
  echo "$dest/run"
}

# pytest's JUnit XML as "N passed, M failed, K skipped" (errors count as failed).
junit_summary() {
  "$PYTHON3" - "$1" <<'EOF'
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
t = f = s = 0
for su in suites:
    t += int(su.get("tests", 0)); f += int(su.get("failures", 0)) + int(su.get("errors", 0)); s += int(su.get("skipped", 0))
print(f"{t - f - s} passed, {f} failed, {s} skipped")
EOF
}

if [[ -n "$PYTHON3" ]]; then
  for v in $PY_VERSIONS; do
    step "Python binding katzenpost_thinclient $v"
    if ! prepare_venv "$v"; then
      tail -n 20 "$ART/venv-$v.log"
      broken "Python $v: could not install katzenpost_thinclient==$v and the test tools (see $ART/venv-$v.log)"
      continue
    fi
    PY="$CACHE/py-$v/bin/python"
    echo "venv $CACHE/py-$v: katzenpost_thinclient $("$PY" -c 'import importlib.metadata as m; print(m.version("katzenpost_thinclient"))')"

    # Our scenarios (they start emulators of their own).
    (cd "$ROOT" && KATZENPOST_PYTHON="$PY" CI=true npx mocha --no-config -r tsx/cjs --extension ts --timeout 60000 --exit \
      --reporter "$ROOT/test/support/reporter.cjs" test/emulator/python-reference.test.ts) 2>&1 | tee "$ART/python-$v-scenarios.log"
    count_log "$ART/python-$v-scenarios.log" "Python $v: our scenarios (python-reference.test.ts)"

    # The binding's own integration tests, from its sdist.
    dir=$(own_tests_dir "$v")
    rc=$?
    if [[ $rc -eq 1 ]]; then
      echo "Python $v: the sdist carries no integration tests (${PY_OWN_TESTS[*]}); our scenarios above are the check for this version"
      continue
    elif [[ $rc -ne 0 ]]; then
      broken "Python $v: could not fetch or unpack the sdist (see $ART/sdist-$v.log)"
      continue
    fi
    if ! emulator_up; then
      broken "Python $v: the binding's own tests need the emulator on $EMULATOR_ADDRESS, which is not running"
      continue
    fi
    echo "running the binding's own tests from its sdist: ${PY_OWN_TESTS[*]}"
    (cd "$dir" && timeout 900 "$PY" -m pytest -p no:cacheprovider -q -rs --timeout 300 -W ignore::DeprecationWarning \
      --junitxml="$ART/python-$v-own-tests.xml" "${PY_OWN_TESTS[@]}") >"$ART/python-$v-own-tests.log" 2>&1
    tail -n 15 "$ART/python-$v-own-tests.log"
    if [[ -f "$ART/python-$v-own-tests.xml" ]]; then
      junit_summary "$ART/python-$v-own-tests.xml" >"$WORK/own-$v.summary" && cat "$WORK/own-$v.summary" >>"$ART/python-$v-own-tests.log"
      count_log "$ART/python-$v-own-tests.log" "Python $v: the binding's own tests (sdist)"
    else
      broken "Python $v: pytest wrote no results (see $ART/python-$v-own-tests.log)"
    fi
  done
fi

# ------------------------------------------------------------------ Rust
step "Rust binding katzenpost_thin_client (test/reference/rust)"
CARGO=$(command -v cargo || true)
[[ -z "$CARGO" && -x "$HOME/.cargo/bin/cargo" ]] && CARGO="$HOME/.cargo/bin/cargo"
if [[ -z "$CARGO" ]]; then
  broken "Rust: cargo is not installed"
else
  export CARGO_TARGET_DIR="$CACHE/cargo-target"
  echo "$("$CARGO" --version), CARGO_TARGET_DIR=$CARGO_TARGET_DIR"
  if (cd "$ROOT/test/reference/rust" && "$CARGO" build --release --locked) >"$ART/rust-build.log" 2>&1; then
    grep -E 'Compiling katzenpost|Finished' "$ART/rust-build.log" || true
    if emulator_up; then
      timeout 600 "$CARGO_TARGET_DIR/release/reference-rust" "$EMULATOR_ADDRESS" 2>&1 | tee "$ART/rust.log"
      count_log "$ART/rust.log" "Rust: keypair, write, read, no-retry miss, copy"
    else
      broken "Rust: the emulator on $EMULATOR_ADDRESS is not running"
    fi
  else
    tail -n 30 "$ART/rust-build.log"
    broken "Rust: cargo build failed (see $ART/rust-build.log)"
  fi
fi

# ------------------------------------------------------------------ summary
if emulator_up; then
  kill "$EMU_PID" 2>/dev/null || true
  wait "$EMU_PID" 2>/dev/null || true
  EMU_PID=""
elif [[ -n "$EMU_PID" ]]; then
  broken "the emulator on $EMULATOR_ADDRESS died during the run (see $ART/emulator.log)"
  EMU_PID=""
fi
echo
echo "=== reference clients: $((SECONDS - T0)) s ==="
if [[ ${#PROBLEMS[@]} -gt 0 ]]; then
  for p in "${PROBLEMS[@]}"; do echo "  - $p"; done
fi
echo
echo "$PASSED passed, $FAILED failed"
[[ $FAILED -eq 0 && $PASSED -gt 0 ]]
