"""What `studio` opens: the project given, else the last one used, else the bundled demo."""

from studio.core.project import create_project


def test_first_launch_opens_the_demo_then_the_last_project(qtbot, tmp_path):
    from studio.gui.app import open_initial_project
    from studio.gui.main_window import MainWindow

    w = MainWindow(probe=False)
    qtbot.addWidget(w)
    open_initial_project(w, None)
    assert w.state.project is not None and w.state.project.name == "Demo"
    assert w.state.project.config().model.path.endswith("resources/demo/model")
    other = create_project("Mine", tmp_path)
    w.open_project(str(other.folder))
    w.close()

    w2 = MainWindow(probe=False)
    qtbot.addWidget(w2)
    open_initial_project(w2, None)
    assert w2.state.project.name == "Mine"
    open_initial_project(w2, str(create_project("Given", tmp_path).folder))
    assert w2.state.project.name == "Given"
    w2.close()
