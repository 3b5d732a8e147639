"""CriticGPT: tampering of real code, critique parsing and automatic labels, FSBS (pure: no Ray)."""
