"""Speech: prompts and (later) VAD/ASR/TTS engines behind Protocols."""
