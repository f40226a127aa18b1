from mediscan.cli import app

app(prog_name="mediscan")
