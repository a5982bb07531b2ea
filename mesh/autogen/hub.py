def msghub(*a, **k):  # placeholder, replaced below
    raise NotImplementedError
