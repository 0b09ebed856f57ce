"""Media: probing, decoding and limits of video and audio files, and the image sequences they become
(sampled frames; log-mel spectrogram windows).

Only :mod:`pipeline.media.spectrogram` imports librosa (lazily, when audio is framed).
"""
