//! The shared generation loop: sampling, stop rules, streaming, chat sessions
