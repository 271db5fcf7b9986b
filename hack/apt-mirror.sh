#!/usr/bin/env bash
# Print the Debian mirror this machine's apt is configured with (never hard-coded).
# Reads deb822 .sources files first, then one-line sources.list entries; skips security suites.
set -euo pipefail
for f in /etc/apt/sources.list.d/*.sources; do
  [ -e "$f" ] || continue
  awk '
    /^[[:space:]]*$/ { if (uri != "" && suites !~ /security/) { print uri; found=1; exit } uri=""; suites=""; next }
    /^URIs:/   { uri=$2 }
    /^Suites:/ { $1=""; suites=$0 }
    END { if (!found && uri != "" && suites !~ /security/) print uri }
  ' "$f"
done | head -n1 | grep . && exit 0
grep -hE '^[[:space:]]*deb[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
  | grep -v security | sed -E 's/^[[:space:]]*deb[[:space:]]+(\[[^]]*\][[:space:]]+)?([^[:space:]]+).*/\2/' \
  | head -n1 | grep . || { echo "no Debian mirror found in /etc/apt sources" >&2; exit 1; }
