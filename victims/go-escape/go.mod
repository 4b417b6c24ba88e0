module idagent.local/go-escape

go 1.19
