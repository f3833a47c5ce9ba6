from merkit.cli import main

main()
