"""RQ tasks and the ffmpeg layer. Never imports Flask."""
