# Prints the summary table of scripts/bench-load.sh from its raw lines:
#   fact backend=… key=value …          (start-up, memory)
#   step backend=… kind=… concurrency=… (examples/bench_load.rs, one per measured step)
#   ceiling backend=postgres kind=… concurrency=… (pgbench)
#   key=value                          (scripts/bench-sweeper.sh's summary.env)
# Targets are those of issue 5; "MISS" marks a figure that misses its target.

function kv(line, out,    n, parts, i, eq) {
    delete out
    n = split(line, parts, " ")
    for (i = 2; i <= n; i++) {
        eq = index(parts[i], "=")
        if (eq) out[substr(parts[i], 1, eq - 1)] = substr(parts[i], eq + 1)
    }
}
function mark(ok) { return ok ? "ok" : "MISS" }

$1 == "fact" {
    kv($0, f)
    for (k in f) if (k != "backend") fact[f["backend"], k] = f[k]
    if (!(f["backend"] in seen)) { seen[f["backend"]] = 1; order[++backends] = f["backend"] }
    next
}
$1 == "step" {
    kv($0, f)
    key = f["backend"] SUBSEP f["kind"] SUBSEP f["concurrency"]
    for (k in f) step[key, k] = f[k]
    if (!((f["backend"], f["kind"]) in kseen)) {
        kseen[f["backend"], f["kind"]] = 1
        kinds[f["backend"], ++nkinds[f["backend"]]] = f["kind"]
    }
    if (!((f["backend"], f["concurrency"]) in cseen)) {
        cseen[f["backend"], f["concurrency"]] = 1
        concs[f["backend"], ++nconcs[f["backend"]]] = f["concurrency"]
    }
    next
}
$1 == "ceiling" {
    kv($0, f)
    key = f["backend"] SUBSEP f["kind"] SUBSEP f["concurrency"]
    for (k in f) ceil[key, k] = f[k]
    next
}
/^[a-z_0-9]+=/ {
    eq = index($0, "=")
    sweeper[substr($0, 1, eq - 1)] = substr($0, eq + 1)
    next
}

END {
    target["start"] = 0.7; target["submit-valid"] = 0.7; target["submit-invalid"] = 0.7
    target["lifecycle"] = 0.7; target["current"] = 0.5
    for (b = 1; b <= backends; b++) {
        be = order[b]
        printf "== %s ==\n", be
        printf "start-up (exec to /healthz): empty database %s ms, migrated %s ms  " \
            "(target < 1000: %s)\n", fact[be, "startup_fresh_ms"], fact[be, "startup_restart_ms"],
            mark(fact[be, "startup_fresh_ms"] + 0 < 1000 && fact[be, "startup_restart_ms"] + 0 < 1000)
        printf "memory: idle RSS %s MB (target < 30: %s); peak RSS (VmHWM) %s MB after the " \
            "run (target < 150: %s)\n\n", fact[be, "idle_rss_mb"],
            mark(fact[be, "idle_rss_mb"] + 0 < 30), fact[be, "peak_rss_mb"],
            mark(fact[be, "peak_rss_mb"] + 0 < 150)
        printf "%-15s %5s %9s %8s %8s %8s %7s %7s %5s | %9s %7s %7s %4s | %6s %s\n",
            "kind", "conc", "req/s", "p50 ms", "p99 ms", "max ms", "srv CPU", "us/req",
            "err", "pgbench/s", "p50 ms", "p99 ms", "cl", "ratio", "target"
        for (k = 1; k <= nkinds[be]; k++) {
            kind = kinds[be, k]
            for (c = 1; c <= nconcs[be]; c++) {
                conc = concs[be, c]
                key = be SUBSEP kind SUBSEP conc
                if (!((key, "rps") in step)) continue
                note = ""
                if (((key, "tps") in ceil) && ceil[key, "tps"] > 0) {
                    ratio = step[key, "rps"] / ceil[key, "tps"]
                    r = sprintf("%.2f", ratio)
                    note = sprintf(">= %.1f %s", target[kind], mark(ratio >= target[kind]))
                    cl = sprintf("%9s %7s %7s %4s", ceil[key, "tps"] + 0, ceil[key, "p50_ms"],
                        ceil[key, "p99_ms"], ceil[key, "clients"])
                } else {
                    r = "-"
                    cl = sprintf("%9s %7s %7s %4s", "-", "-", "-", "-")
                }
                if (kind == "current" && conc == 32)
                    note = note sprintf("%sp99 < 5 ms %s", note == "" ? "" : "; ",
                        mark(step[key, "p99_ms"] + 0 < 5))
                if (step[key, "ran_out"] + 0 == 1) note = note " (ran out of tokens)"
                printf "%-15s %5s %9s %8s %8s %8s %6s%% %7s %5s | %s | %6s %s\n", kind, conc,
                    step[key, "rps"], step[key, "p50_ms"], step[key, "p99_ms"],
                    step[key, "max_ms"], step[key, "server_cpu_pct"],
                    step[key, "server_cpu_us_per_req"], step[key, "errors"], cl, r, note
            }
        }
        printf "\n"
    }
    if ("burst_rate" in sweeper) {
        printf "== sweeper (postgres, scripts/bench-sweeper.sh) ==\n"
        ratio = sweeper["ceiling_rate"] > 0 ? sweeper["burst_rate"] / sweeper["ceiling_rate"] : 0
        printf "backlog of %s steps due at once: %s timeouts/s; the same writes as one SQL " \
            "transaction: %s rows/s; ratio %.2f (target >= 0.8: %s)\n", sweeper["burst"],
            sweeper["burst_rate"], sweeper["ceiling_rate"], ratio, mark(ratio >= 0.8)
        printf "expiries at %s/s, inserted by SQL (no starts meanwhile): %s timed out; lateness " \
            "written p50 %s ms, p99 %s ms, max %s ms\n", sweeper["steady_target_rate"],
            sweeper["expiry_count"], sweeper["expiry_written_p50_ms"],
            sweeper["expiry_written_p99_ms"], sweeper["expiry_written_max_ms"]
        printf "starts at %s/s asked, %s achieved (start p50 %s ms, p99 %s ms); " \
            "lateness written p50 %s ms, p99 %s ms, max %s ms (read p50 %s, p99 %s)\n",
            sweeper["steady_target_rate"], sweeper["steady_achieved_rate"],
            sweeper["steady_start_p50_ms"], sweeper["steady_start_p99_ms"],
            sweeper["lateness_written_p50_ms"], sweeper["lateness_written_p99_ms"],
            sweeper["lateness_written_max_ms"], sweeper["lateness_read_p50_ms"],
            sweeper["lateness_read_p99_ms"]
    }
}
