#!/bin/sh
# run-all.sh: runs every suite (unit tests, integration tests, the integration tests again
# against the ASan+UBSan build, then the unit tests and a handful of integration tests under
# valgrind memcheck) and sums their "N passed, N failed" lines. VALGRIND=0 skips the valgrind
# part (it is skipped, and said so, when valgrind is not installed).
cd "$(dirname "$0")/.." || exit 1
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
# valgrind memcheck (issue 14): about 3 minutes. Definite leaks and every memory error fail; the
# brute-force loop of test_config samples every 7th position (CERTGATE_UNIT_STRIDE).
VG="valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite"
if [ "${VALGRIND:-1}" = 0 ]; then
    echo "skip valgrind (VALGRIND=0)"
elif ! command -v valgrind >/dev/null 2>&1; then
    echo "skip valgrind: not installed (apt-get install valgrind)"
else
    for t in build/unit/test_*; do
        [ -x "$t" ] || continue
        if CERTGATE_UNIT_STRIDE=7 $VG -q "$t" >"$out/u" 2>&1; then
            total_pass=$((total_pass + 1))
            echo "ok   valgrind $t"
        else
            total_fail=$((total_fail + 1))
            echo "FAIL valgrind $t"
            cat "$out/u"
        fi
    done
    if [ -f tests/integration/run.py ]; then
        python3 tests/integration/run.py --binary build/certgate --wrapper "$VG" \
            -k mtls.ecdsa.valid_chain_accepted -k mtls.ecdsa.expired_refused \
            -k http.keepalive -k http.pipelining -k http.chunked_request_body \
            -k ws.websocket_echo -k relay.tls_echo -k relay.tcp_proxy_protocol_v2 \
            -k reload.sighup_swaps_certificate -k xfcc.matrix.sanitize.xfcc \
            -k allowlist.enforced_handshake_request_resumption -k upstream.reset_502 \
            -k fault.upstream_malformed_head -k fault.upstream_reset_mid -k fault.disk_full \
            -k http.chunked_response -k relay.tls_half_close -k drain. \
            -k reload.tenant_added_changed_removed -k allowlist.admin_calls \
            -k h2up1.post_chunked_trailers_dropped -k h2up1.client_reset_closes_upstream \
            -k h2upc.trailers_end_to_end -k grpc.bidi_streaming_ping_pong \
            -k h2attack.pseudo_header_misuse_refused -k h2attack.continuation_flood_empty_frames \
            2>&1 | tee "$out/v"
        tally "$out/v" integration-valgrind
    fi
fi
rm -rf "$out"
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]
