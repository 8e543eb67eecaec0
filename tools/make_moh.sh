#!/usr/bin/env bash
# Synthesises the box's own royalty-free music on hold (voices/moh/calm.wav) with sox: a slow arpeggio over
# four chords (C - Am - F - G), soft plucked tones with a little reverb, 8 kHz mono, loops seamlessly.
# Run it again to regenerate; the output is committed so boxes need no sox to play it.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-voices/moh/calm.wav}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
chords=("C4 E4 G4 C5" "A3 C4 E4 A4" "F3 A3 C4 F4" "G3 B3 D4 G4")
n=0
for rep in 1 2; do
    for chord in "${chords[@]}"; do
        for note in $chord $chord; do
            n=$((n + 1))
            sox -q -n -r 8000 -c 1 -b 16 "$tmp/$(printf %03d $n).wav" \
                synth 0.6 pluck "$note" synth 0.6 sine mix "$note" fade 0.01 0.6 0.35 gain -12
        done
    done
done
sox -q "$tmp"/*.wav "$tmp/seq.wav"
sox -q "$tmp/seq.wav" -r 8000 -c 1 -b 16 "$out" reverb 30 50 60 gain -n -6
echo "$out: $(soxi -D "$out") s"
