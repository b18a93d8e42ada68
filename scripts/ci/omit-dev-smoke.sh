#!/usr/bin/env bash
# A production install (`npm ci --omit=dev`) of this checkout must serve: a
# copy of the tracked files, installed without dev dependencies, started as
# `npm start` starts it, then one page fetched. A run-time import that sits in
# devDependencies fails here.
set -euo pipefail
src="$(cd "$(dirname "$0")/../.." && pwd)"
dir="$(mktemp -d)"
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$dir"
}
trap cleanup EXIT
git -C "$src" ls-files -z | (cd "$src" && xargs -0 cp --parents -t "$dir")
cd "$dir"
if [ -d "$src/node_modules" ]; then
  # The checkout's own install, hard-linked, with dev dependencies pruned: what
  # `npm ci --omit=dev` leaves, without building native modules a second time.
  cp -al "$src/node_modules" node_modules
  npm prune --omit=dev --no-audit --no-fund >/dev/null
else
  npm ci --omit=dev --no-audit --no-fund >/dev/null
fi
test ! -e node_modules/vitest || { echo "dev dependencies were not removed" >&2; exit 1; }
# Every listener on a free port: HTTP is the one fetched.
port=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
sed -i -E "s/127\.0\.0\.1:8080/127.0.0.1:${port}/; s/127\.0\.0\.1:(8443|2525|2121|8081)/127.0.0.1:0/" config/makewaves.yaml
node scripts/build.mjs
node dist/makewaves.mjs serve --config config >"$dir/serve.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  if curl -fsS -o /dev/null -H 'Host: example.test' "http://127.0.0.1:${port}/" 2>/dev/null; then
    echo "production install (npm ci --omit=dev) serves: GET / for example.test answered 200"
    exit 0
  fi
  if ! kill -0 "$pid" 2>/dev/null; then break; fi
  sleep 0.2
done
echo "production install (npm ci --omit=dev) did not serve; its log:" >&2
cat "$dir/serve.log" >&2
exit 1
