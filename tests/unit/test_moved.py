"""Module paths of release 0.1.0 load the modules that hold their objects now."""


def test_old_module_paths_load_the_new_modules() -> None:
    import celeriac.app
    import celeriac.refs
    import celeriac.serialize

    from celeriac.tasks import app
    from celeriac.wire import refs, serialize

    assert (celeriac.app, celeriac.refs, celeriac.serialize) == (app, refs, serialize)
    assert celeriac.refs.TaskRef.__module__ == "celeriac.wire.refs"
