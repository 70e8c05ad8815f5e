#!/usr/bin/env bash
# Installs the Debian tools the deployment tests use, when they are missing:
#   docker-compose   (`docker-compose -f docker-compose.yml config` validates without an engine)
#   kubectl          (`kubectl kustomize deploy/k8s` renders offline; Debian package kubernetes-client)
#   wrk              (the HTTP load generator of benchmarks/bench_inference.py)
#   promtool         (`promtool check rules` / `test rules` on the shipped alerts; Debian package prometheus)
#   chromium         (headless: the browser test of the monitor's landing page and report)
# Runs apt-get update first. Uses sudo -n when not root. Never fails the caller: when it cannot
# install, it says why and exits 0 (the tests then skip with a reason, or fail when
# DRIFTLOOP_REQUIRE_DEPLOY_TOOLS is set).
set -u

missing=()
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
command -v kubectl >/dev/null 2>&1 || missing+=(kubernetes-client)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)

if [ "${#missing[@]}" -eq 0 ]; then
    echo "install-tools: docker-compose, kubectl, wrk, promtool and chromium already present"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-tools: apt-get not found; install ${missing[*]} by hand (deployment tests will skip)"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
else
    echo "install-tools: not root and no password-less sudo; install ${missing[*]} by hand (deployment tests will skip)"
    exit 0
fi

echo "install-tools: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
if ! "${as_root[@]}" apt-get update -q >/dev/null; then
    echo "install-tools: apt-get update failed; deployment tests will skip"
    exit 0
fi
if ! "${as_root[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; then
    echo "install-tools: apt-get install ${missing[*]} failed; deployment tests will skip"
    exit 0
fi
echo "install-tools: installed ${missing[*]}"
exit 0
