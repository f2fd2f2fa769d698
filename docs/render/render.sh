#!/usr/bin/env bash
# `just docs`: renders every Mermaid diagram of docs/*.md and docs/adr/*.md
# to SVG under docs/render/out/ with mermaid-cli, driving Debian's Chromium
# (puppeteer.json); npm installs mermaid-cli from the lock file with its
# install scripts off, so no browser is ever downloaded. Fails, naming the
# file, when a diagram does not parse.
#
# --self-test also renders a deliberately broken diagram and fails unless
# that render fails: the check `just test` relies on can fail.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
docs=$(dirname "$here")
out="$here/out"
cd "$here"

if [[ ! -x node_modules/.bin/mmdc ]] || [[ package-lock.json -nt node_modules/.package-lock.json ]]; then
    PUPPETEER_SKIP_DOWNLOAD=1 npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
fi
[[ -x /usr/bin/chromium ]] || { echo "render.sh: needs Debian's chromium (apt-get install chromium)" >&2; exit 1; }

render() { # $1 = markdown file, $2 = output markdown
    PUPPETEER_SKIP_DOWNLOAD=1 node_modules/.bin/mmdc --quiet -p puppeteer.json -i "$1" -o "$2" >/dev/null
}

mkdir -p "$out"
if [[ ${1:-} == --self-test ]]; then
    broken=$(mktemp -d)
    trap 'rm -rf "$broken"' EXIT
    printf '# broken\n\n```mermaid\nflowchart TD\n    A --> \n    B -->> C ((\n```\n' >"$broken/broken.md"
    if render "$broken/broken.md" "$broken/out.md" 2>/dev/null; then
        echo "render.sh: a broken diagram rendered without an error; the check cannot fail" >&2
        exit 1
    fi
    echo "render.sh: a broken diagram fails the render, as it must"
fi

count=0
for file in "$docs"/*.md "$docs"/adr/*.md; do
    [[ -e $file ]] || continue
    grep -q '^```mermaid' "$file" || continue
    name=$(basename "$file" .md)
    if ! render "$file" "$out/$name.md"; then
        echo "render.sh: a diagram in ${file#"$docs"/} does not parse" >&2
        exit 1
    fi
    n=$(grep -c '^```mermaid' "$file")
    count=$((count + n))
    echo "render.sh: ${file#"$docs"/}: $n diagram(s)"
done
echo "render.sh: $count diagram(s) rendered to ${out#"$docs"/}/"
