"""`python -m ragkit` is the `ragkit` command."""

from ragkit.cli import main


def app_factory():  # noqa: ANN201 - for uvicorn --workers (each worker builds its own app)
    from ragkit.http.app import create_app

    return create_app()


if __name__ == "__main__":
    main()
