#!/bin/bash
# drive.sh URL OUTPREFIX [extra chromium flags...]  -- runs headless chromium until the page logs SPIKE-DONE (or 30 s)
url=$1; out=$2; shift 2
start=$(date +%s.%N)
chromium --headless=new --no-sandbox --disable-gpu --enable-logging=stderr --v=0 \
  --user-data-dir=$(mktemp -d) --no-first-run --window-size=900,1200 "$@" "$url" > /dev/null 2> $out.chromium.log &
pid=$!
for i in $(seq 1 300); do grep -qa 'SPIKE-DONE\|SPIKE EXC' $out.chromium.log && break; sleep 0.1; done
kill $pid 2>/dev/null; wait $pid 2>/dev/null
end=$(date +%s.%N)
echo "chromium ran $(echo "$end - $start" | bc) s"
grep -a 'INFO:CONSOLE' $out.chromium.log | sed 's/.*CONSOLE[^"]*"//' | head -c 6000
