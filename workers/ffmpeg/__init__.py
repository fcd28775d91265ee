"""The ffmpeg layer: what ffmpeg is asked to do and how it is run.

- `plan`: every choice of a conversion, from validated options and the probed input;
- `commands`: the ffmpeg and espeak-ng command lines of a plan, built by pure functions;
- `meters`: ffmpeg's loudness and level meters, their command lines and what they report;
- `probe`: what an input holds (the one probe of the worker and the File Conversion endpoint);
- `wavheader`: the probe's shortcut for plain WAV files;
- `runner`: the one place that starts processes (deadline, own process group, kill and reap);
- `forkserver`: ffmpeg and ffprobe forked from a copy started once (`forkserver.c`).

Nothing here touches the database or the queue.
"""
