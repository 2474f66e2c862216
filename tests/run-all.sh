#!/bin/sh
# run-all.sh: runs every suite (unit tests, integration tests, the integration tests again
# against the ASan+UBSan build) and sums their "N passed, N failed" lines.
cd "$(dirname "$0")/.."
total_pass=0
total_fail=0
tally() {
    line=$(tail -n 1 "$1")
    p=$(echo "$line" | sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\1/p')
    f=$(echo "$line" | sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\2/p')
    if [ -z "$p" ]; then
        echo "suite $2 did not report a result" >&2
        p=0
        f=1
    fi
    total_pass=$((total_pass + p))
    total_fail=$((total_fail + f))
}
out=$(mktemp -d)
for t in build/unit/test_* build/asan/unit/test_*; do
    [ -x "$t" ] || continue
    if "$t" >"$out/u" 2>&1; then
        total_pass=$((total_pass + 1))
        echo "ok   $t"
    else
        total_fail=$((total_fail + 1))
        echo "FAIL $t"
        cat "$out/u"
    fi
done
for r in build/fuzz/replay_* build/asan/fuzz/replay_*; do
    [ -x "$r" ] || continue
    name=$(basename "$r" | sed 's/^replay_//')
    if "$r" "tests/fuzz/corpus/$name" >"$out/u" 2>&1; then
        total_pass=$((total_pass + 1))
        echo "ok   $r ($(tail -n 1 "$out/u"))"
    else
        total_fail=$((total_fail + 1))
        echo "FAIL $r"
        cat "$out/u"
    fi
done
if [ -f tests/integration/run.py ]; then
    python3 tests/integration/run.py --binary build/certgate 2>&1 | tee "$out/i"
    tally "$out/i" integration
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=99 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        python3 tests/integration/run.py --binary build/asan/certgate --sanitizer 2>&1 | tee "$out/a"
    tally "$out/a" integration-asan
fi
rm -rf "$out"
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]
