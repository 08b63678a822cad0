#!/usr/bin/env bash
# The README's Quick start, run literally: every ```sh block between
# `<!-- quickstart:NAME -->` and `<!-- /quickstart -->` markers, in a fresh folder that
# stands for the repository's top folder (its `scripts` is linked), with the built
# binary and the venv's tccli on PATH. Two things are not literal, on purpose:
#   - the server listens on a free port (IMAGEGATE_LISTEN=127.0.0.1:0, not 9000, which
#     another program may hold), and `127.0.0.1:9000` in the later blocks becomes the
#     address it printed;
#   - step 2's `export` of the printed keys is done from what `serve` really printed.
# What `serve` prints is checked against the README's serve-output block, line by line
# (values may differ, the shape may not). Both imports must end NORMAL.
#
#   tests/quickstart/run.sh        (IMAGEGATE_BIN, default target/debug/imagegate)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN="${IMAGEGATE_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/imagegate}"
VENV="$ROOT/tests/.venv"
README="$ROOT/README.md"
[[ -x "$BIN" ]] || { echo "no imagegate binary at $BIN" >&2; exit 1; }
[[ -x "$VENV/bin/tccli" ]] || { echo "no tccli in $VENV (scripts/test makes it)" >&2; exit 1; }

WORK="$(mktemp -d)"
SERVER_PID=""
cleanup() {
    [[ -n "$SERVER_PID" ]] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
mkdir "$WORK/bin"
ln -s "$BIN" "$WORK/bin/imagegate"
ln -s "$ROOT/scripts" "$WORK/scripts"
export PATH="$WORK/bin:$VENV/bin:$PATH"
# A tccli profile of the machine's user must not leak into the run.
export HOME="$WORK/home"
mkdir "$HOME"
cd "$WORK"

# block NAME: the lines of the fenced block between the NAME markers.
block() {
    awk -v name="$1" '
        $0 == "<!-- quickstart:" name " -->" { inside = 1; next }
        inside && $0 == "<!-- /quickstart -->" { exit }
        inside && /^```/ { fence = !fence; next }
        inside && fence { print }
    ' "$README"
}

serve_cmd="$(block serve)"
[[ -n "$serve_cmd" ]] || { echo "README has no quickstart:serve block" >&2; exit 1; }
echo "+ $serve_cmd"
IMAGEGATE_LISTEN=127.0.0.1:0 bash -c "exec $serve_cmd" >serve.out 2>serve.err &
SERVER_PID=$!
for _ in $(seq 1 300); do
    grep -q '^imagegate listening on ' serve.out && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat serve.err >&2; echo "serve exited" >&2; exit 1; }
    sleep 0.1
done
ADDR="$(sed -n 's/^imagegate listening on //p' serve.out)"
[[ -n "$ADDR" ]] || { cat serve.err >&2; echo "serve printed no listening line" >&2; exit 1; }
cat serve.out

# The README's output block, each line a pattern: its values (AKID..., ..., digits, the
# default address) stand for any value of that kind.
python3 - "$(block serve-output)" serve.out <<'PY'
import re, sys
want = sys.argv[1].splitlines()
got = open(sys.argv[2]).read().splitlines()
def pattern(line):
    p = re.escape(line)
    p = p.replace(re.escape("127.0.0.1:9000"), r"127\.0\.0\.1:\d+")
    p = p.replace(re.escape("AKID..."), r"AKID\S+").replace(re.escape("..."), r"\S+")
    p = re.sub(r"\d{4,}", r"\\d+", p)
    return "^" + p + "$"
if len(want) != len(got) or not all(re.match(pattern(w), g) for w, g in zip(want, got)):
    sys.exit("serve printed:\n" + "\n".join(got) + "\nthe README says:\n" + "\n".join(want))
print("serve printed what the README says")
PY

value() { sed -n "s/^  $1: *//p" serve.out; }
TENCENTCLOUD_SECRET_ID="$(value SecretId)"
TENCENTCLOUD_SECRET_KEY="$(value SecretKey)"
APPID="$(value AppId)"
export TENCENTCLOUD_SECRET_ID TENCENTCLOUD_SECRET_KEY APPID

for name in disk import tccli; do
    cmds="$(block "$name")"
    [[ -n "$cmds" ]] || { echo "README has no quickstart:$name block" >&2; exit 1; }
    cmds="${cmds//127.0.0.1:9000/$ADDR}"
    printf '+ %s\n' "$cmds"
    bash -euo pipefail -c "$cmds"
done

# Both imports end NORMAL (the CLI's --wait already proved the first), asked with tccli.
for name in demo demo-tccli; do
    state=""
    for _ in $(seq 1 120); do
        state="$(tccli cvm DescribeImages --region ap-guangzhou --endpoint "http://$ADDR" \
            --Filters "[{\"Name\":\"image-name\",\"Values\":[\"$name\"]}]" |
            python3 -c 'import json,sys; n=sys.argv[1]; print(" ".join(i["ImageState"] for i in json.load(sys.stdin)["ImageSet"] if i["ImageName"] == n))' "$name")"
        [[ "$state" == NORMAL || "$state" == IMPORTFAILED ]] && break
        sleep 0.5
    done
    [[ "$state" == NORMAL ]] || { tail -20 serve.err >&2; echo "$name ended ${state:-nowhere}, not NORMAL" >&2; exit 1; }
    echo "$name: NORMAL"
done
echo "quick start: passed"
