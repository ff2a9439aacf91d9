"""Docstring sections that several public classes share, written once."""


def shared_sections(**sections):
    """Class decorator: each line ``    %(name)s`` of the class docstring becomes `sections[name]`.

    Parameters
    ----------
    **sections : str
        Numpydoc text indented by 4 spaces, ending with a newline, by placeholder name.

    Returns
    -------
    callable
        The decorator, returning the class with its docstring filled in (left alone under
        ``python -OO``, which strips docstrings).
    """
    def decorate(cls):
        if cls.__doc__:
            for name, text in sections.items():
                cls.__doc__ = cls.__doc__.replace(f"    %({name})s\n", text)
        return cls
    return decorate
