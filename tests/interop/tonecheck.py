#!/usr/bin/env python3
"""tonecheck.py WAV [EXPECTED_HZ] : find the dominant frequency of a 16-bit PCM WAV
(mono or first channel) with a Goertzel scan, in several 0.25 s windows.
Exit 0 if every window with signal peaks within 3 % of EXPECTED_HZ."""
import math, struct, sys, wave

def goertzel(x, sr, f):
    w = 2 * math.pi * f / sr; c = 2 * math.cos(w); s1 = s2 = 0.0
    for v in x:
        s0 = v + c * s1 - s2; s2 = s1; s1 = s0
    return s1 * s1 + s2 * s2 - c * s1 * s2

def main():
    path = sys.argv[1]; exp = float(sys.argv[2]) if len(sys.argv) > 2 else None
    w = wave.open(path); sr, ch, n = w.getframerate(), w.getnchannels(), w.getnframes()
    raw = w.readframes(n)                 # a header whose size is wrong (linphone's) is cut to the data
    n = len(raw) // (2 * ch); raw = raw[:n * 2 * ch]
    samples = struct.unpack("<%dh" % (n * ch), raw)[::ch]
    dur = n / sr
    print(f"{path}: {sr} Hz, {ch} ch, {dur:.2f} s")
    if n == 0:
        print("  EMPTY"); sys.exit(2)
    win = int(sr * 0.25); ok = True; checked = 0
    # decimate 48 kHz to 8 kHz for speed (the tones are < 4 kHz)
    step = max(1, sr // 8000); srd = sr // step
    for start in range(int(sr * 0.5), n - win, max(win, (n - win) // 8)):
        seg = samples[start:start + win:step]
        rms = math.sqrt(sum(v * v for v in seg) / len(seg))
        if rms < 100:
            print(f"  t={start/sr:6.2f}s rms={rms:7.1f} (silence)"); continue
        best = max(range(100, 3900, 10), key=lambda f: goertzel(seg, srd, f))
        best = max([best + d for d in range(-9, 10)], key=lambda f: goertzel(seg, srd, f))
        good = exp is None or abs(best - exp) <= 0.03 * exp
        ok &= good; checked += 1
        print(f"  t={start/sr:6.2f}s rms={rms:7.1f} peak={best} Hz {'OK' if good else 'MISMATCH'}")
    if exp is not None:
        ok &= checked > 0
        print("  RESULT:", "PASS" if ok else "FAIL", f"(expected {exp:g} Hz)")
        sys.exit(0 if ok else 1)

main()
