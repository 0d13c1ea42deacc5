//! A Dockerfile parser: stages, `FROM`, `COPY`/`ADD` sources, `ARG`s, with line numbers.
