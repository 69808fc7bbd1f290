#!/usr/bin/env bash
# Debian packages the DICOM tests use, installed only when missing (quietly):
#   dicom3tools (dciodvfy), orthanc and orthanc-dicomweb (a real PACS for the DICOMweb test).
set -euo pipefail
missing=()
command -v dciodvfy >/dev/null 2>&1 || missing+=(dicom3tools)
[ -x /usr/sbin/Orthanc ] || command -v Orthanc >/dev/null 2>&1 || missing+=(orthanc)
[ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || missing+=(orthanc-dicomweb)
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
        echo "[setup] missing Debian packages ${missing[*]} and not root: install them with apt-get" >&2
        exit 1
    fi
fi
echo "[setup] installing ${missing[*]} (apt-get)"
# The tests start their own Orthanc; keep apt from starting the system service (port 8042)
# when no policy says so already (containers usually have one).
if [ ! -e /usr/sbin/policy-rc.d ]; then
    $SUDO sh -c 'printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d'
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
log="$(mktemp)"
if ! { $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    rm -f "$log"
    echo "[setup] apt-get could not install ${missing[*]}" >&2
    exit 1
fi
rm -f "$log"
