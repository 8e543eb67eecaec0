#!/usr/bin/env bash
# Synthesises the box's own royalty-free music on hold (voices/moh/calm.wav) with sox: a soft sustained pad
# under a slow plucked arpeggio over four chords (C - Am - F - G), a little reverb, 8 kHz mono. The pad
# never stops, so a caller never hears dead air between notes. Run it again to regenerate; the output is
# committed so boxes need no sox to play it.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-voices/moh/calm.wav}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
chords=("C4 E4 G4 C5" "A3 C4 E4 A4" "F3 A3 C4 F4" "G3 B3 D4 G4")
beat=0.6
n=0
for rep in 1 2; do
    for chord in "${chords[@]}"; do
        n=$((n + 1))
        read -r -a notes <<<"$chord"
        # The pad: the chord's tones held for the whole bar, mixed, with short fades that overlap the next bar.
        pads=()
        for note in "${notes[@]}"; do
            sox -q -n -r 8000 -c 1 -b 16 "$tmp/pad-$n-$note.wav" synth 4.9 sine "$note" fade 0.08 4.9 0.08 gain -24
            pads+=("$tmp/pad-$n-$note.wav")
        done
        sox -q -m "${pads[@]}" "$tmp/pad-$n.wav"
        # The arpeggio: each tone plucked twice, up and down.
        arp=()
        k=0
        for note in "${notes[@]}" "${notes[@]}"; do
            k=$((k + 1))
            sox -q -n -r 8000 -c 1 -b 16 "$tmp/arp-$n-$k.wav" synth "$beat" pluck "$note" fade 0.005 "$beat" 0.2 gain -10
            arp+=("$tmp/arp-$n-$k.wav")
        done
        sox -q "${arp[@]}" "$tmp/arp-$n.wav" pad 0 0.1
        sox -q -m "$tmp/pad-$n.wav" "$tmp/arp-$n.wav" "$tmp/bar-$(printf %02d $n).wav" trim 0 4.8
    done
done
sox -q "$tmp"/bar-*.wav "$tmp/seq.wav"
sox -q "$tmp/seq.wav" -r 8000 -c 1 -b 16 "$out" reverb 30 50 60 gain -n -6
echo "$out: $(soxi -D "$out") s"
