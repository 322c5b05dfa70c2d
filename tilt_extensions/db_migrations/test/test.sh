#!/bin/bash
# Brings up the extension's whole graph once and tears it down (tilt-extensions style).
cd "$(dirname "$0")"

set -ex
tilt ci "$@"
tilt down "$@"
